"""Loss weighting: how the per-task losses become the loss to backward.

Every method is a `LossWeighting`. The trainer calls `total_loss` and
`backward` once per step with the unweighted per-task losses and the
parameters that the tasks share, `weights()` at every logging step, and
`end_window` with each task's mean loss over the window.

- "fixed": the `tasks[].weight` values.
- "uncertainty": Kendall, Gal and Cipolla, "Multi-Task Learning Using
  Uncertainty to Weigh Losses" (CVPR 2018). Each task has a learned log
  variance s, and the loss is sum_i exp(-s_i) L_i + s_i.
- "dwa": dynamic weight average, Liu, Johns and Davison, "End-to-End
  Multi-Task Learning with Attention" (CVPR 2019). The weights are
  K softmax(r / T) with r_i = L_i(t-1) / L_i(t-2) over logging windows.
- "gradnorm": Chen et al., "GradNorm" (ICML 2018). Learned weights move the
  gradient norm of each weighted loss, on the last shared layer's weights,
  toward the mean norm times (relative inverse training rate) ** alpha.
- "pcgrad": Yu et al., "Gradient Surgery for Multi-Task Learning" (NeurIPS
  2020). Each task's gradient of the shared parameters loses its component
  along any other task's gradient it conflicts with (negative dot product).
"""

import math

import numpy as np
import paddle

WEIGHTING_METHODS = ("fixed", "uncertainty", "dwa", "gradnorm", "pcgrad")


class LossWeighting:
    """The fixed weighting, and the interface of every method."""

    def __init__(self, names, base_weights, config=None, seed=0):
        self.names = list(names)
        self.base_weights = [float(w) for w in base_weights]
        self.config = config

    def parameters(self):
        """Return the learned parameters the trainer's optimizer updates."""
        return []

    def weights(self):
        """Return the current weight of each task, keyed by task name."""
        return dict(zip(self.names, self.base_weights))

    def total_loss(self, losses, share=1.0):
        """Return the weighted sum of the per-task loss tensors.

        `share` is the fraction of the batch that `losses` cover when a
        batch is trained in parts. Terms that do not scale with the losses,
        such as the uncertainty regulariser, are multiplied by it.
        """
        total = paddle.zeros([], dtype="float32")
        for weight, loss in zip(self.weights().values(), losses):
            total = total + weight * loss
        return total

    def backward(self, total, losses, shared_parameters):
        """Set the gradients of one step.

        `total` is `total_loss(losses)`, `losses` the per-task loss tensors
        and `shared_parameters` those that every task's loss reaches, the
        last shared layer's weight last.
        """
        total.backward()

    def end_window(self, mean_losses):
        """Record each task's mean loss over a logging window (a list)."""

    def state(self):
        """Return the JSON state that a resumed run restores."""
        return {}

    def restore(self, state):
        """Continue from a `state()`."""


class UncertaintyWeighting(LossWeighting):
    """Learned log variances s: loss sum_i exp(-s_i) w_i L_i + s_i.

    The task weight exp(-s_i) settles near 1 / L_i, so a noisier task (a
    larger irreducible loss) gets a lower weight.
    """

    def __init__(self, names, base_weights, config=None, seed=0):
        super().__init__(names, base_weights, config, seed)
        self.log_variances = paddle.create_parameter(
            [len(self.names)], "float32",
            default_initializer=paddle.nn.initializer.Constant(0.0))
        self.log_variances.stop_gradient = False

    def parameters(self):
        return [self.log_variances]

    def weights(self):
        precisions = np.exp(-self.log_variances.numpy())
        return {name: float(w * p) for name, w, p in
                zip(self.names, self.base_weights, precisions)}

    def total_loss(self, losses, share=1.0):
        total = paddle.zeros([], dtype="float32")
        for j, (weight, loss) in enumerate(zip(self.base_weights, losses)):
            log_variance = self.log_variances[j]
            total = (total + weight * paddle.exp(-log_variance) * loss
                     + share * log_variance)
        return total

    def state(self):
        return {"log_variances": self.log_variances.numpy().tolist()}

    def restore(self, state):
        self.log_variances.set_value(
            np.asarray(state["log_variances"], dtype="float32"))


class DynamicWeightAverage(LossWeighting):
    """Weights K softmax(r / T) from the loss ratios of the last two windows.

    K is the number of tasks, and each weight is then multiplied by the
    task's base weight over the mean base weight. Until two windows have
    ended, the base weights apply.
    """

    def __init__(self, names, base_weights, config=None, seed=0):
        super().__init__(names, base_weights, config, seed)
        self.temperature = config.temperature if config else 2.0
        self.history = []
        self.current = list(self.base_weights)

    def weights(self):
        return dict(zip(self.names, self.current))

    def end_window(self, mean_losses):
        # A window where a task had no labelled rows (a NaN mean) is
        # ignored, so the weights stay as they were.
        if any(not math.isfinite(v) or v <= 0 for v in mean_losses):
            return
        self.history = (self.history + [list(mean_losses)])[-2:]
        if len(self.history) == 2:
            self.current = dwa_weights(self.history[0], self.history[1],
                                       self.temperature, self.base_weights)

    def state(self):
        return {"history": self.history, "current": self.current}

    def restore(self, state):
        self.history = [list(h) for h in state["history"]]
        self.current = list(state["current"])


def dwa_weights(older, newer, temperature, base_weights):
    """Return K softmax(r / T) scaled by the base weights, r = newer / older."""
    ratios = np.asarray(newer, dtype="float64") / np.asarray(older, "float64")
    scaled = np.exp((ratios - ratios.max()) / temperature)
    base = np.asarray(base_weights, dtype="float64")
    weights = len(ratios) * scaled / scaled.sum() * base / max(base.mean(),
                                                                1e-12)
    return weights.tolist()


class GradNorm(LossWeighting):
    """Learned weights that balance the tasks' gradient norms.

    With G_i = w_i ||d L_i / d W|| on the last shared layer's weights W,
    the weights follow the gradient of sum_i |G_i - mean(G) r_i ** alpha|,
    with the target held constant, where r_i is L_i / L_i(0) over its mean.
    The weights are then renormalised to sum to the sum of the base
    weights. Because G_i is linear in w_i, d G_i / d w_i = ||d L_i / d W||,
    so no second-order gradient is needed.
    """

    def __init__(self, names, base_weights, config=None, seed=0):
        super().__init__(names, base_weights, config, seed)
        self.alpha = config.alpha if config else 1.5
        self.learning_rate = config.gradnorm_learning_rate if config else 0.025
        self.current = list(self.base_weights)
        self.initial_losses = None

    def weights(self):
        return dict(zip(self.names, self.current))

    def backward(self, total, losses, shared_parameters):
        last_layer = shared_parameters[-1]
        grads = per_task_backward(losses, self.current, [last_layer])
        # The backward passes differentiate w_i L_i, so dividing by w_i
        # gives the norm of d L_i / d W.
        norms = [float(np.linalg.norm(g[0])) / max(w, 1e-12)
                 for g, w in zip(grads, self.current)]
        self.update(norms, [float(loss) for loss in losses])

    def update(self, grad_norms, losses):
        """Take one GradNorm step from each task's ||d L_i / d W|| and L_i."""
        norms = np.asarray(grad_norms, dtype="float64")
        values = np.asarray(losses, dtype="float64")
        if self.initial_losses is None:
            if (values <= 0).any():
                return
            self.initial_losses = values.tolist()
        weights = np.asarray(self.current, dtype="float64")
        weighted_norms = weights * norms
        ratios = values / np.asarray(self.initial_losses)
        ratios = ratios / max(ratios.mean(), 1e-12)
        target = weighted_norms.mean() * ratios ** self.alpha
        gradient = np.sign(weighted_norms - target) * norms
        weights = np.clip(weights - self.learning_rate * gradient, 1e-3, None)
        self.current = (weights * sum(self.base_weights)
                        / weights.sum()).tolist()

    def state(self):
        return {"current": self.current, "initial_losses": self.initial_losses}

    def restore(self, state):
        self.current = list(state["current"])
        self.initial_losses = state["initial_losses"]


class PCGrad(LossWeighting):
    """Projects conflicting per-task gradients of the shared parameters.

    One backward per task gives each task's weighted gradient of the shared
    parameters; those are projected (see `project_conflicting`) and summed.
    The other parameters, such as the heads, get the plain weighted sum.
    """

    def __init__(self, names, base_weights, config=None, seed=0):
        super().__init__(names, base_weights, config, seed)
        self.rng = np.random.default_rng(seed)

    def backward(self, total, losses, shared_parameters):
        grads = per_task_backward(losses, self.base_weights,
                                  shared_parameters)
        task_grads = [np.concatenate([g.ravel() for g in task])
                      for task in grads]
        combined = np.sum(project_conflicting(task_grads, self.rng), axis=0)
        offset = 0
        for parameter in shared_parameters:
            size = int(np.prod(parameter.shape))
            value = combined[offset:offset + size].reshape(parameter.shape)
            offset += size
            if parameter.grad is not None:
                parameter.grad.set_value(value.astype("float32"))


def per_task_backward(losses, weights, parameters):
    """Run one backward per weighted loss; return each task's gradients.

    The result holds, per task, the numpy gradient of w_i L_i for each of
    `parameters` (zeros where the loss does not reach one). Afterwards
    every parameter's gradient is the sum over tasks, the gradient of
    sum_i w_i L_i. Full backward passes are used instead of `paddle.grad`
    because custom PyLayer kernels may reject partial gradients.
    """
    previous = [_grad_array(p) for p in parameters]
    result = []
    for j, (weight, loss) in enumerate(zip(weights, losses)):
        (weight * loss).backward(retain_graph=j < len(losses) - 1)
        current = [_grad_array(p) for p in parameters]
        result.append([c - b for c, b in zip(current, previous)])
        previous = current
    return result


def _grad_array(parameter):
    if parameter.grad is None:
        return np.zeros(parameter.shape, dtype="float32")
    return parameter.grad.numpy().copy()


def project_conflicting(task_grads, rng):
    """Return each gradient with its conflicting components projected out.

    For task i and each other task j in random order, when g_i . g_j < 0
    the component of g_i along g_j is removed from g_i. Dot products use
    the original g_j, as PCGrad does.
    """
    projected = []
    for i, grad in enumerate(task_grads):
        result = np.array(grad, dtype="float64")
        others = [j for j in range(len(task_grads)) if j != i]
        for j in rng.permutation(others):
            other = np.asarray(task_grads[j], dtype="float64")
            dot = float(result @ other)
            norm = float(other @ other)
            if dot < 0 and norm > 0:
                result = result - dot / norm * other
        projected.append(result)
    return projected


_METHODS = {
    "fixed": LossWeighting,
    "uncertainty": UncertaintyWeighting,
    "dwa": DynamicWeightAverage,
    "gradnorm": GradNorm,
    "pcgrad": PCGrad,
}


def build_weighting(config, names, base_weights, seed=0):
    """Return the `LossWeighting` for a `LossWeightingConfig` (or None: fixed)."""
    method = config.method if config is not None else "fixed"
    if method not in _METHODS:
        raise ValueError(f"loss weighting method {method!r} is invalid: "
                         f"expected one of {WEIGHTING_METHODS}")
    return _METHODS[method](names, base_weights, config, seed)
