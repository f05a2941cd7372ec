"""Automatic mixed precision for training on a GPU (`train.amp`).

Under `paddle.amp.auto_cast` (level O1), matrix products and other
operators on Paddle's white list run in float16 or bfloat16, while losses,
softmax and norms stay float32. float16 training multiplies the loss by a
dynamic scale (`paddle.amp.GradScaler`) so small gradients do not flush to
zero. The scaler unscales the gradients before the optimizer step and
skips the step when any gradient overflowed. bfloat16 has float32's
exponent range and needs no scale.

On the CPU, Paddle's auto_cast left a Linear layer's output float32 here,
and GradScaler turns itself off (paddle 3.3.1). So "auto" turns mixed
precision on only on a GPU, and an explicit dtype on the CPU is a config
error.
"""

import numpy as np
import paddle

from ..errors import ConfigError

AMP_SETTINGS = ("auto", "off", "float16", "bfloat16")
# The loss weightings whose backward pass is one backward() of the total
# loss and that add no optimizer of their own, so a loss scale applies.
AMP_WEIGHTINGS = ("fixed", "dwa")


def current_device():
    return paddle.device.get_device()


def resolve_amp(setting, method="fixed", device=None):
    """Return the mixed-precision dtype that `setting` selects, or None.

    `method` is train.loss_weighting.method. Raises ConfigError for a dtype
    on the CPU and for loss weightings that run their own backward passes.
    """
    device = device or current_device()
    on_gpu = device.startswith("gpu")
    if setting == "off" or (setting == "auto" and not on_gpu):
        return None
    if not on_gpu:
        raise ConfigError(
            f"train.amp={setting!r} needs a GPU, but training runs on "
            f"{device}, where Paddle's mixed precision does nothing; set "
            "train.amp to auto or off")
    if method not in AMP_WEIGHTINGS:
        if setting == "auto":
            return None
        raise ConfigError(
            f"train.amp={setting!r} cannot be combined with "
            f"train.loss_weighting.method={method!r}; use "
            f"{' or '.join(AMP_WEIGHTINGS)} weighting, or train.amp=off")
    return "float16" if setting == "auto" else setting


class MixedPrecision:
    """The autocast context, the loss scale and their resumable state.

    With `dtype` None every method acts as plain float32 training does.
    """

    def __init__(self, dtype):
        self.dtype = dtype
        self.scaler = None
        if dtype == "float16":
            self.scaler = paddle.amp.GradScaler(init_loss_scaling=2.0 ** 15)

    @property
    def enabled(self):
        return self.dtype is not None

    def autocast(self):
        """Return the context in which the forward pass runs."""
        return paddle.amp.auto_cast(enable=self.enabled,
                                    dtype=self.dtype or "float16", level="O1")

    def backward(self, loss):
        """Backpropagate `loss`, multiplied by the loss scale if any."""
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        loss.backward()

    def step(self, optimizer):
        """Unscale the gradients and take the optimizer step, unless a
        gradient overflowed; then adjust the loss scale."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state(self):
        """Return the JSON state of the loss scale (empty without one)."""
        if self.scaler is None:
            return {}
        state = self.scaler.state_dict()
        return {key: np.asarray(value).tolist()
                if isinstance(value, np.ndarray) else value
                for key, value in state.items()}

    def restore(self, state):
        """Continue from a `state()`; a state without a scale is ignored."""
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
