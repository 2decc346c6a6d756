"""What every op family's autograd shares: when a call runs under a transform, when it will be
differentiated, a differentiable backward for create_graph=True, and inference-only operators.
"""

from __future__ import annotations

import torch
from torch.autograd import forward_ad


def transform_active(tensors) -> bool:
    """Whether a call on `tensors` runs under a torch.func transform (grad, vmap, jvp, jacrev,
    ...) or carries forward-mode AD tangents (dual tensors, gradcheck's check_forward_ad).
    The registered operators have neither tangent nor batching rules (a custom operator drops
    tangents silently), so such calls run the reference math (plain PyTorch) instead.
    Entries that are not tensors, None included, are skipped."""
    if torch.compiler.is_compiling():
        return False  # torch.compile traces the registered operators as they are
    if torch._C._functorch.peek_interpreter_stack() is not None:
        return True
    if forward_ad._current_level < 0:  # no dual level entered: no tangent anywhere
        return False
    return any(
        isinstance(t, torch.Tensor) and forward_ad.unpack_dual(t).tangent is not None
        for t in tensors
    )


def needs_grad(tensors) -> bool:
    """Whether a call on `tensors` will be differentiated: recorded by autograd, or under
    forward-mode AD or a torch.func transform (entries that are not tensors, None included, are
    skipped). A forward that will be differentiated keeps what its derivatives need, one that
    will not can run an inference kernel. Under torch.jit.trace: always, so that the traced
    graph is one and the same (the differentiable operator) whatever the grad mode of the
    call that traced it, of the trace's own check, and of the later replays."""
    if torch.jit.is_tracing():
        return True
    return (
        torch.is_grad_enabled()
        and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)
    ) or transform_active(tensors)


def differentiable_vjp(reference_fn, inputs, grads, needs_input_grad):
    """The vector-Jacobian product of `reference_fn` (plain PyTorch) at `inputs`, itself
    differentiable: what a backward returns when autograd records it (create_graph=True, e.g.
    double backward or a gradient penalty). The fused backward kernels are opaque to autograd,
    so the gradient is recomputed through the reference math, which autograd differentiates to
    any order. Returns one gradient (or None) per input."""
    wanted = [
        i for i, t in enumerate(inputs) if needs_input_grad[i] and isinstance(t, torch.Tensor)
    ]
    result = [None] * len(inputs)
    if not wanted:
        return result
    with torch.enable_grad():
        outputs = reference_fn(*inputs)
        pairs = [(o, g) for o, g in zip(outputs, grads) if g is not None and o.requires_grad]
        if not pairs:
            return result
        got = torch.autograd.grad(
            [o for o, _ in pairs],
            [inputs[i] for i in wanted],
            [g for _, g in pairs],
            create_graph=True,
            allow_unused=True,
        )
    for i, g in zip(wanted, got):
        result[i] = torch.zeros_like(inputs[i]) if g is None else g
    return result


# The registrations made by register_autograd (a Library lives as long as its registrations).
_LIBRARIES = {}


def register_autograd(op_name: str, backward, setup_context) -> None:
    """torch.library.register_autograd(op_name, backward, setup_context=setup_context), with
    less work per differentiable call, for the operators of lstm_fused's C++ schemas.

    torch's generic kernel calls torch._library.utils.fill_defaults on every differentiable
    call to put back the trailing arguments the dispatcher leaves out at their default value;
    it rebuilds the schema's argument list about twice per argument, some 27 us a call
    (2-core AMD EPYC VM), more than the whole kernel of a one-step LSTM layer. Here the
    defaults are read from the schema once. The rest is what torch's kernel does: below
    Autograd with the same keys, one autograd.Function around it, setup_context(ctx, inputs,
    output) with every argument. Schemas with keyword-only arguments get torch's own."""
    op = torch._library.utils.lookup_op(op_name)
    arguments = op._schema.arguments
    if any(a.kwarg_only for a in arguments):
        torch.library.register_autograd(op_name, backward, setup_context=setup_context)
        return
    defaults = tuple(a.default_value if a.has_default_value() else None for a in arguments)
    below_autograd = torch._C._after_autograd_keyset

    def forward(ctx, *args):  # args: the operator's arguments, then the dispatch key set
        keyset, args = args[-1], args[:-1]
        with torch._C._AutoDispatchBelowAutograd():
            result = op.redispatch(keyset & below_autograd, *args)
        setup_context(ctx, args + defaults[len(args) :], result)
        return result

    def differentiate(ctx, *grads):
        needs = ctx.needs_input_grad
        ctx.needs_input_grad = needs[:-1]  # the arguments the call passed (as torch's kernel)
        try:
            grads_in = backward(ctx, *grads)
        finally:
            ctx.needs_input_grad = needs
        return (*grads_in, None)

    function = type(
        f"Autograd_{op._opname}",
        (torch.autograd.Function,),
        {"forward": staticmethod(forward), "backward": staticmethod(differentiate)},
    )

    def kernel(keyset, *args):
        if torch._C.is_grad_enabled() and torch._C._any_requires_grad(*args):
            return function.apply(*args, keyset)
        with torch._C._AutoDispatchBelowAutograd():
            return op.redispatch(keyset & below_autograd, *args)

    namespace, name = op_name.split("::")
    if namespace not in _LIBRARIES:
        _LIBRARIES[namespace] = torch.library.Library(namespace, "FRAGMENT")
    _LIBRARIES[namespace].impl(name, kernel, "Autograd", with_keyset=True)


def refuse_autograd(op_name: str, to_train: str) -> None:
    """An inference-only operator: differentiating through it raises a clear error (instead of
    outputs that silently carry no gradient) that says what to run to train (`to_train`)."""

    def setup_context(ctx, inputs, output):
        pass

    def backward(ctx, *grads):
        raise RuntimeError(
            f"{op_name} is inference only (no backward): call it under "
            f"torch.no_grad(), or {to_train} to train"
        )

    register_autograd(op_name, backward, setup_context=setup_context)


def zeros_if_none(grad, like):
    """A gradient autograd left undefined, as zeros shaped like `like`."""
    return torch.zeros_like(like) if grad is None else grad
