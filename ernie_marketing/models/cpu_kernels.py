"""Faster CPU training of the encoder's linear, attention, norm and dropout.

Paddle's dynamic graph (paddle 3.3.1, 2-core AMD EPYC, float32) loses time
in five places when it trains on the CPU:

- The bias gradient of `nn.Linear` is a column sum of the output gradient.
  Paddle's reduction kernel took about 100 ms for a [4096, 3072] sum that
  a matrix product with a row of ones computes in about 1 ms.
- `nn.MultiHeadAttention` splits heads with `transpose`, which returns a
  strided view. The matrix products and the scaling that read those views
  first copy them element by element, about 4 times slower than Paddle's
  dense transpose kernel.
- The attention mask, [batch, 1, 1, length], is added to the scores with
  a broadcasting add that took 20 ms per layer at [32, 12, 128, 128],
  against 2 ms for expanding the mask and adding two tensors of one shape.
- The `nn.LayerNorm` gradient kernel took 24 ms for a forward and backward
  pass over [32, 128, 768] that elementwise operators and matrix-vector
  products do in 14 ms.
- Dropout draws one random number per element with a scalar generator:
  about 8 ms for [32, 12, 51, 51] attention weights, against 2 ms for a
  mask drawn as random bytes with numpy (see `dropout`).

`enable_cpu_kernels` replaces the `forward` of those layers with one that
computes the same outputs with the same operators. Only the backward pass,
the memory layout of the attention heads and the way the mask is broadcast
differ, so gradients match the stock layers to float rounding. Dropout keeps
each element with the same probability as Paddle's, but draws its masks from
other random numbers, so the masks differ from the stock layers' masks. The
replacement acts only while a layer is in training mode in the dynamic graph
with gradients enabled. In eval mode, under `no_grad` and while
`paddle.jit.to_static` traces the model, each layer runs its own class's
`forward`. Parameters and state dicts are unchanged.

NOTE: paddle 3.3.1 crashes (segmentation fault) when a graph that contains
any `PyLayer` is backpropagated a second time, as `backward(retain_graph=
True)` followed by another backward does. Disable the kernels for such
training; the trainer does for the gradnorm and pcgrad loss weighting.
"""

import types

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle.autograd import PyLayer
from paddle.nn.layer.transformer import _convert_attention_mask

from ..runtime import keep_freed_memory

CPU_KERNEL_SETTINGS = ("auto", "on", "off")
_STRIDE_FLAG = "FLAGS_use_stride_kernel"


def use_cpu_kernels(setting, device=None):
    """Return whether `setting` ("auto", "on" or "off") enables the kernels.

    "auto" enables them on the CPU, judged by `device` (default: Paddle's
    current device).
    """
    if setting not in CPU_KERNEL_SETTINGS:
        raise ValueError(f"invalid CPU kernel setting {setting!r}; expected "
                         f"one of {list(CPU_KERNEL_SETTINGS)}")
    if setting == "auto":
        device = device or paddle.device.get_device()
        return device.startswith("cpu")
    return setting == "on"


def prepare_cpu_training(model, setting="auto", device=None):
    """Apply the CPU training speed-ups that `setting` enables.

    Patches `model` with `enable_cpu_kernels` and makes malloc keep freed
    memory (`runtime.keep_freed_memory`). Returns None when `setting` turns
    them off. Otherwise it returns the patched layer counts and, under
    "keep_freed_memory", whether malloc was changed.
    """
    if not use_cpu_kernels(setting, device):
        return None
    applied = enable_cpu_kernels(model)
    applied["keep_freed_memory"] = keep_freed_memory()
    return applied


def enable_cpu_kernels(model):
    """Patch `model`'s linear, attention and layer norm layers.

    Returns how many layers of each kind were patched. Calling it again on
    a patched model changes nothing.
    """
    counts = {"linear": 0, "attention": 0, "layer_norm": 0, "dropout": 0}
    for layer in model.sublayers(include_self=True):
        if isinstance(layer, nn.Linear):
            _patch(layer, _linear_forward)
            counts["linear"] += 1
        elif isinstance(layer, nn.MultiHeadAttention):
            _patch(layer, _attention_forward)
            counts["attention"] += 1
        elif isinstance(layer, nn.LayerNorm):
            _patch(layer, _layer_norm_forward)
            counts["layer_norm"] += 1
        elif isinstance(layer, nn.Dropout):
            _patch(layer, _dropout_forward)
            counts["dropout"] += 1
    return counts


def disable_cpu_kernels(model):
    """Restore the class `forward` of every layer `enable_cpu_kernels`
    patched; return how many layers were restored."""
    restored = 0
    for layer in model.sublayers(include_self=True):
        if _is_patched(layer):
            del layer.__dict__["forward"]
            restored += 1
    return restored


def _patch(layer, forward):
    if not _is_patched(layer):
        layer.forward = types.MethodType(forward, layer)


def _is_patched(layer):
    forward = layer.__dict__.get("forward")
    return getattr(forward, "__func__", None) in (
        _linear_forward, _attention_forward, _layer_norm_forward,
        _dropout_forward)


def _records_gradients(layer):
    return (layer.training and paddle.in_dynamic_mode()
            and paddle.is_grad_enabled())


# Linear ----------------------------------------------------------------------


def _linear_forward(self, input):
    if self.bias is None or not _records_gradients(self):
        return type(self).forward(self, input)
    return LinearFunction.apply(input, self.weight, self.bias)


class LinearFunction(PyLayer):
    """`F.linear(x, weight, bias)` whose bias gradient is `ones @ grad`."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.needs_grad = [not t.stop_gradient for t in (x, weight, bias)]
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensor()
        needs_x, needs_weight, needs_bias = ctx.needs_grad
        in_features, out_features = weight.shape
        grad_2d = grad.reshape([-1, out_features])
        grad_x = grad_weight = grad_bias = None
        if needs_x:
            grad_x = paddle.matmul(grad, weight, transpose_y=True)
        if needs_weight:
            grad_weight = paddle.matmul(x.reshape([-1, in_features]), grad_2d,
                                        transpose_x=True)
        if needs_bias:
            ones = paddle.ones([1, grad_2d.shape[0]], grad.dtype)
            grad_bias = paddle.matmul(ones, grad_2d).reshape([out_features])
        return grad_x, grad_weight, grad_bias


# Attention -------------------------------------------------------------------


def _attention_forward(self, query, key=None, value=None, attn_mask=None,
                       cache=None):
    """Scaled dot-product attention as in `nn.MultiHeadAttention.forward`.

    The operators and their order match the class's method, so the output
    is the same; only the head split and merge differ in memory layout.
    """
    if cache is not None or self.need_weights or not _records_gradients(self):
        return type(self).forward(self, query, key, value, attn_mask, cache)
    key = query if key is None else key
    value = query if value is None else value
    q = SplitHeads.apply(self.q_proj(query), self.num_heads)
    k = SplitHeads.apply(self.k_proj(key), self.num_heads)
    v = SplitHeads.apply(self.v_proj(value), self.num_heads)

    scores = paddle.matmul(q * (self.head_dim ** -0.5), k, transpose_y=True)
    if attn_mask is not None:
        mask = _convert_attention_mask(attn_mask, scores.dtype)
        # Paddle's add broadcasts a [batch, 1, 1, length] mask over heads
        # and queries about 9 times slower than it expands the mask and adds
        # two tensors of one shape. The sums are the same.
        scores = scores + paddle.expand(mask, scores.shape)
    weights = F.softmax(scores)
    if self.dropout:
        weights = dropout(weights, self.dropout)
    context = MergeHeads.apply(paddle.matmul(weights, v))
    return self.out_proj(context)


def _dense_transpose(x, perm):
    """Transpose `x` into new contiguous memory, not into a strided view."""
    if not paddle.get_flags(_STRIDE_FLAG)[_STRIDE_FLAG]:
        return paddle.transpose(x, perm)
    paddle.set_flags({_STRIDE_FLAG: False})
    try:
        return paddle.transpose(x, perm)
    finally:
        paddle.set_flags({_STRIDE_FLAG: True})


class SplitHeads(PyLayer):
    """[batch, length, heads * head_dim] to [batch, heads, length, head_dim]."""

    @staticmethod
    def forward(ctx, x, num_heads):
        batch, length, width = x.shape
        heads = x.reshape([batch, length, num_heads, width // num_heads])
        return _dense_transpose(heads, [0, 2, 1, 3])

    @staticmethod
    def backward(ctx, grad):
        batch, num_heads, length, head_dim = grad.shape
        merged = _dense_transpose(grad, [0, 2, 1, 3])
        return merged.reshape([batch, length, num_heads * head_dim])


class MergeHeads(PyLayer):
    """[batch, heads, length, head_dim] to [batch, length, heads * head_dim]."""

    @staticmethod
    def forward(ctx, x):
        batch, num_heads, length, head_dim = x.shape
        ctx.num_heads = num_heads
        merged = _dense_transpose(x, [0, 2, 1, 3])
        return merged.reshape([batch, length, num_heads * head_dim])

    @staticmethod
    def backward(ctx, grad):
        batch, length, width = grad.shape
        heads = grad.reshape([batch, length, ctx.num_heads,
                              width // ctx.num_heads])
        return _dense_transpose(heads, [0, 2, 1, 3])


# Layer norm ------------------------------------------------------------------


def _layer_norm_forward(self, input):
    if (self.weight is None or self.bias is None
            or len(self._normalized_shape) != 1
            or not _records_gradients(self)):
        return type(self).forward(self, input)
    return LayerNormFunction.apply(input, self.weight, self.bias,
                                   self._epsilon)


class LayerNormFunction(PyLayer):
    """`F.layer_norm` over the last axis, with the backward pass written as
    elementwise operators and matrix-vector products."""

    @staticmethod
    def forward(ctx, x, weight, bias, epsilon):
        width = weight.shape[0]
        x_2d = x.reshape([-1, width])
        average = paddle.full([width, 1], 1.0 / width, x.dtype)
        centered = x_2d - paddle.matmul(x_2d, average)
        variance = paddle.matmul(centered * centered, average)
        ctx.save_for_backward(centered, paddle.rsqrt(variance + epsilon),
                              weight)
        ctx.needs_grad = [not t.stop_gradient for t in (x, weight, bias)]
        return F.layer_norm(x, [width], weight, bias, epsilon)

    @staticmethod
    def backward(ctx, grad):
        centered, inverse_std, weight = ctx.saved_tensor()
        needs_x, needs_weight, needs_bias = ctx.needs_grad
        width = weight.shape[0]
        grad_2d = grad.reshape([-1, width])
        normalized = centered * inverse_std
        grad_x = grad_weight = grad_bias = None
        if needs_x:
            # Gradient of (x - mean) / std for the upstream grad * weight.
            average = paddle.full([width, 1], 1.0 / width, grad.dtype)
            scaled = grad_2d * weight
            mean_scaled = paddle.matmul(scaled, average)
            mean_projection = paddle.matmul(scaled * normalized, average)
            grad_x = ((scaled - mean_scaled - normalized * mean_projection)
                      * inverse_std).reshape(grad.shape)
        ones = paddle.ones([1, grad_2d.shape[0]], grad.dtype)
        if needs_weight:
            grad_weight = paddle.matmul(ones, grad_2d * normalized).reshape(
                [width])
        if needs_bias:
            grad_bias = paddle.matmul(ones, grad_2d).reshape([width])
        return grad_x, grad_weight, grad_bias


# Dropout ---------------------------------------------------------------------


def _dropout_forward(self, input):
    if (self.axis is not None or self.mode != "upscale_in_train"
            or not _records_gradients(self)):
        return type(self).forward(self, input)
    return dropout(input, self.p)


def dropout(x, p):
    """Training-mode dropout of `x`: zero each element with probability `p`
    and scale the rest by 1 / (1 - p), as `F.dropout` does by default.

    A float32 input on the CPU takes `DropoutFunction`; others, and p of 0
    or 1, take `F.dropout`. Raises ValueError for p outside [0, 1] or NaN, which
    would otherwise wrap the integer threshold and drop the wrong share.
    """
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability p={p!r} is invalid: expected "
                         "a number from 0 to 1")
    if (p == 0 or p == 1 or x.dtype != paddle.float32
            or not x.place.is_cpu_place()):
        return F.dropout(x, p, training=True, mode="upscale_in_train")
    return DropoutFunction.apply(x, float(p))


class DropoutFunction(PyLayer):
    """Dropout whose mask numpy draws as 32-bit random integers.

    An element is dropped when its integer is below round(p * 2**32), so
    the drop probability is p to within 2**-32. The generator is seeded
    from Paddle's global generator at each call, so `paddle.seed` and a
    saved Paddle random state reproduce the masks. The mask is kept for
    the backward pass as float32, 4 bytes per element where Paddle keeps 1.
    The products run on flat views, because Paddle's elementwise kernels
    are several times slower on a last axis of odd width such as a
    sequence length.
    """

    @staticmethod
    def forward(ctx, x, p):
        seed = paddle.randint(0, 2**31 - 1, [2], dtype="int64").tolist()
        generator = np.random.Generator(np.random.SFC64(seed))
        size = int(np.prod(x.shape))
        draws = np.frombuffer(generator.bytes(4 * size), np.uint32)
        threshold = np.uint32(min(round(p * 2**32), 2**32 - 1))
        mask = np.multiply(draws >= threshold, np.float32(1 / (1 - p)),
                           dtype=np.float32)
        mask = paddle.utils.dlpack.from_dlpack(mask)
        ctx.save_for_backward(mask)
        return (x.reshape([-1]) * mask).reshape(x.shape)

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensor()
        return (grad.reshape([-1]) * mask).reshape(grad.shape)
