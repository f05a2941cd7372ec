"""Data-parallel training over processes started by paddle.distributed.launch.

Every process (rank) trains a full copy of the model. Each draws the same
batch order from the same seed, trains on its share of every global batch
of `train.batch_size` rows, and `paddle.DataParallel` averages the
gradients, so all ranks apply the same update. Loss sums are divided by the
labelled count of the whole global batch over the number of ranks (see
`loss_divisor`), which makes the averaged gradient equal to the gradient of
the global batch mean that a single process computes.

A run with one process gets a group of size 1 whose operations return
their input, so the trainer has one code path.
"""

import logging
import os

import numpy as np
import paddle

from ..errors import ConfigError

logger = logging.getLogger(__name__)


def launched_world_size():
    """Return the number of training processes that paddle.distributed.launch
    started (PADDLE_TRAINERS_NUM), or 1 for a plain run."""
    return int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))


def launched_rank():
    """Return this process's rank from paddle.distributed.launch, else 0."""
    return int(os.environ.get("PADDLE_TRAINER_ID", "0"))


class ProcessGroup:
    """The training processes of one run and the collective operations the
    trainer needs; rank 0 is the one that logs and writes files."""

    def __init__(self, rank=0, world_size=1, local_size=1):
        self.rank = rank
        self.world_size = world_size
        self.local_size = local_size

    @classmethod
    def from_environment(cls, batch_size):
        """Join the processes started by the launcher, or return a group of one.

        Raises ConfigError when `batch_size`, the global batch, does not
        divide by the number of processes, before any process waits for
        another.
        """
        world_size = launched_world_size()
        if world_size == 1:
            return cls()
        if batch_size % world_size:
            raise ConfigError(
                f"train.batch_size={batch_size} does not divide by the "
                f"{world_size} training processes; train.batch_size is the "
                "global batch split evenly over the processes, so set it to "
                f"a multiple of {world_size} or change --nproc_per_node")
        import paddle.distributed as dist

        dist.init_parallel_env()
        local_size = int(os.environ.get("PADDLE_LOCAL_SIZE", world_size))
        return cls(dist.get_rank(), dist.get_world_size(), local_size)

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.world_size > 1

    def default_num_threads(self):
        """Return the math threads per process when train.num_threads is null:
        this machine's cores shared by the processes on it (None for one
        process, which then uses every core)."""
        if not self.distributed:
            return None
        cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else os.cpu_count() or 1)
        return max(1, cores // self.local_size)

    def wrap(self, model, find_unused_parameters=False):
        """Return `model` in `paddle.DataParallel`, which copies rank 0's
        parameters to every rank and averages gradients in backward()."""
        if not self.distributed:
            return model
        return paddle.DataParallel(
            model, find_unused_parameters=find_unused_parameters)

    def shard(self, rows):
        """Return this rank's rows of `rows`: every world_size-th one.

        A global batch is sorted by length, so striding gives every rank
        rows of similar lengths. Shard sizes differ by at most one row.
        """
        return np.asarray(rows)[self.rank::self.world_size]

    # Collective operations: every rank must call them in the same order.

    def sum(self, values):
        """Return the element-wise sum of float64 `values` over all ranks."""
        values = np.asarray(values, dtype=np.float64)
        if not self.distributed:
            return values
        import paddle.distributed as dist

        tensor = paddle.to_tensor(values.reshape(-1))
        dist.all_reduce(tensor)
        return tensor.numpy().reshape(values.shape)

    def average_gradients(self, parameters):
        """Replace each parameter's gradient by its mean over all ranks.

        For parameters outside `paddle.DataParallel`, such as learned loss
        weights. A parameter without a gradient counts as zeros.
        """
        if not self.distributed:
            return
        for parameter in parameters:
            if parameter.grad is None:
                grad = np.zeros(parameter.shape, dtype="float32")
            else:
                grad = parameter.grad.numpy()
            total = self.sum(grad) / self.world_size
            if parameter.grad is None:
                # A backward pass that did not reach the parameter left it
                # without a gradient, so it gets a new one.
                parameter._set_grad_ivar(paddle.to_tensor(total.astype(
                    "float32")))
            else:
                parameter.grad.set_value(total.astype("float32"))

    def broadcast(self, values):
        """Return rank 0's float64 `values` on every rank."""
        values = np.asarray(values, dtype=np.float64)
        if not self.distributed:
            return values
        import paddle.distributed as dist

        tensor = paddle.to_tensor(values.reshape(-1))
        dist.broadcast(tensor, src=0)
        return tensor.numpy().reshape(values.shape)

    def loss_divisor(self, count):
        """Return the divisor of a task's loss sum on this rank's shard.

        `count` is the shard's labelled rows. The divisor is the labelled
        rows of the whole global batch (at least 1) over world_size: the
        gradient average over ranks is then the gradient of the global batch
        mean. Every rank must compute its losses in the same task order.
        """
        import paddle.distributed as dist

        total = count.detach().clone().reshape([1])
        dist.all_reduce(total)
        return total.clip(min=1.0).reshape([]) / self.world_size

    def gather_rows(self, arrays, num_rows):
        """Return the full arrays of `num_rows` rows from each rank's shard.

        `arrays` are this rank's float32 [shard rows, width] arrays, one per
        output, for the rows `shard(range(num_rows))`.
        """
        if not self.distributed:
            return arrays
        import paddle.distributed as dist

        longest = -(-num_rows // self.world_size)
        results = []
        for array in arrays:
            padded = np.zeros((longest, array.shape[1]), dtype=array.dtype)
            padded[:len(array)] = array
            parts = []
            dist.all_gather(parts, paddle.to_tensor(padded))
            full = np.empty((num_rows, array.shape[1]), dtype=array.dtype)
            for rank, part in enumerate(parts):
                rows = len(range(rank, num_rows, self.world_size))
                full[rank::self.world_size] = part.numpy()[:rows]
            results.append(full)
        return results

    def gather_objects(self, value):
        """Return the list of every rank's picklable `value`, in rank order."""
        if not self.distributed:
            return [value]
        import paddle.distributed as dist

        values = []
        dist.all_gather_object(values, value)
        return values

    def broadcast_parameters(self, model):
        """Copy rank 0's parameters and buffers into `model` on every rank."""
        if not self.distributed:
            return
        import paddle.distributed as dist

        for tensor in model.state_dict().values():
            # detach() shares the storage, so the broadcast writes in place.
            dist.broadcast(tensor.detach(), src=0)

    def barrier(self):
        if self.distributed:
            import paddle.distributed as dist

            dist.barrier()
