"""The optax transforms: norm, modulation, schedule, the optimizer, its statistics."""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from superlevel.optim.settings import check_real

__all__ = [
    "ScaleBySuperlevelState",
    "SuperlevelState",
    "decay_schedule",
    "global_norm",
    "modulation",
    "scale_by_superlevel",
    "stats",
    "superlevel",
]

# The extra argument through which the optimizer hands eta_t to its own chain.
_ETA_ARG = "superlevel_eta"


# ---------------------------------------------------------------- argument checks
def _concrete(value: Any) -> float | None:
    """``value`` as a float when it is known now (not traced: under jit or vmap it is not).

    Raises:
        TypeError: not a real number or a one-element real floating array.
    """
    if isinstance(value, jax.core.Tracer):
        return None
    if isinstance(value, bool | complex):
        raise TypeError(f"must be a real number, got {value!r} ({type(value).__name__})")
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, jax.Array | np.ndarray | np.generic):
        if np.size(value) != 1 or not np.issubdtype(value.dtype, np.floating):
            raise TypeError(
                f"must be a real number or a one-element float array, got an array of "
                f"shape {np.shape(value)} and dtype {value.dtype}"
            )
        return float(np.asarray(value).reshape(()))
    raise TypeError(f"must be a real number, got {value!r} ({type(value).__name__})")


def _check(name: str, value: Any, *, positive: bool = False, high: float | None = None):
    """Check a hyperparameter whose value is known: finite, ``>= 0`` (``> 0``), ``<= high``.

    Returns the float value, or ``None`` for a traced value (checked where it was set).
    """
    try:
        v = _concrete(value)
    except TypeError as exc:
        raise TypeError(f"{name} {exc}") from None
    # The same domain rule as the torch optimizer's hyperparameters.
    return None if v is None else check_real(name, v, positive=positive, high=high)


def _check_flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")


def _is_zero(value: Any) -> bool:
    """A Python zero: the transform it would drive is left out of the chain.

    Arrays (``inject_hyperparams`` turns every number into one, ``vmap`` traces them) keep
    the transform in, so that ``init`` and ``update`` build the same state structure.
    """
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == 0


# ---------------------------------------------------------------- norm and modulation
def _real_dtype(leaves: list[jax.Array]) -> jnp.dtype:
    dtype = jnp.result_type(*[x.dtype for x in leaves])
    if not jnp.issubdtype(dtype, jnp.inexact):
        raise TypeError(f"gradients must be floating point, got dtype {dtype}")
    return jnp.finfo(dtype).dtype  # complex64 -> float32


def _squares(x: jax.Array, dtype: jnp.dtype) -> jax.Array:
    x = jnp.abs(x) if jnp.iscomplexobj(x) else x
    x = x.astype(dtype)
    return jnp.sum(x * x)


def _pow2_below(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(k, 2^-k)`` with ``2^k <= x / 2``, ``x < 2^(k+2)`` (``x > 0`` normal and finite);
    ``k`` clipped so that ``2^k`` and ``2^-k`` are normal numbers of ``x``'s dtype."""
    info = jnp.finfo(x.dtype)
    k = jnp.clip(jnp.frexp(x)[1] - 2, info.minexp, -info.minexp)
    return k, jnp.ldexp(jnp.ones((), x.dtype), -k)


def _scaled_norm(
    leaves: list[jax.Array], dtype: jnp.dtype
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    r""":math:`n = 2^k r`, :math:`r = \sqrt{\sum (2^{-k} g)^2}`, :math:`2^{k+2} > \max |g|`:
    no square overflows, and the scaling is exact (a power of two: dividing by
    :math:`\max |g|` would be rewritten by XLA as a multiply by its reciprocal, subnormal
    above 8.5e37 in float32 and flushed to 0). ``(n, ok, 2^k, r)``, ``ok`` whether every
    element is finite (``2^k`` and ``r`` are then finite; ``n`` may be inf)."""
    mags = [jnp.abs(x).astype(dtype) for x in leaves]
    m = jnp.max(jnp.stack([jnp.max(x, initial=0.0) for x in mags]))
    ok = jnp.isfinite(m)
    k, inv = _pow2_below(jnp.where(ok, m, jnp.ones((), dtype)))
    big = jnp.ldexp(jnp.ones((), dtype), k)
    r = jnp.sqrt(sum(jnp.sum(jnp.square(x * inv)) for x in mags))
    # m is inf (or nan) exactly when some element is: that is the norm then.
    return jnp.where(ok, big * r, m), ok, big, r


@jax.jit  # eager callers: one compilation per tree structure, not a lax.cond per call
def _measure(tree: Any) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(n, ok, big, rest)``: the global norm ``n``, whether every element is finite, and
    ``n = big * rest`` with both finite when ``ok`` (``(n, 1)`` where ``n`` is a normal
    number, ``(max |g|, ||g / max |g| ||)`` where the plain sum overflowed or underflowed)."""
    leaves = [x for x in jax.tree.leaves(tree) if x is not None]
    if not leaves:
        zero = jnp.zeros(())
        return zero, jnp.ones((), bool), jnp.ones(()), zero
    dtype = _real_dtype(leaves)
    plain = jnp.sqrt(sum(_squares(x, dtype) for x in leaves))
    info = jnp.finfo(dtype)
    # Below sqrt(tiny) / eps the squares of the largest elements may be subnormal.
    low = float(np.sqrt(info.tiny) / info.eps)
    fine = jnp.isfinite(plain) & (plain >= low)
    kinds = (dtype, bool, dtype, dtype)
    return jax.lax.cond(
        fine,
        lambda: (plain, jnp.ones((), bool), plain, jnp.ones((), dtype)),
        lambda: tuple(v.astype(t) for v, t in zip(_scaled_norm(leaves, dtype), kinds, strict=True)),
    )


def _factors(
    n: jax.Array, ok: jax.Array, big: jax.Array, rest: jax.Array, norm_scale: Any
) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""``(eta, u, v)``: :math:`\eta_t` and two factors with :math:`x \eta_t = (x u) v`.

    Where :math:`\eta = 1 / (1 + n / s)` is a normal number, ``(u, v) = (eta, 1)``.
    Where it is not (``n`` above the dtype's largest value, or ``eta`` below its smallest
    normal number, flushed to 0 on XLA's CPU) but every element is finite, with
    :math:`n = b\,r` (``big``, ``rest``), :math:`b = f\,2^e`, :math:`f \in [1/2, 1)`:

    .. math:: u = 2^{-k}, \quad v = \frac{s\,2^{k}/b}{s/b + r}, \quad k = e - 2

    (``x u`` is exact and ``|x u| < 4`` for ``|x| <= b``; ``s / b`` may underflow to 0
    harmlessly; an element whose ``x u`` flushes to 0 has ``|x eta| < tiny``: a subnormal
    result either way). Chosen by selection on scalars, so the common path costs one more
    multiply per element, fused, and no branch over the tree. ``eta`` is 0 where not ok.
    """
    dtype = n.dtype
    eta = jnp.where(ok, 1.0 / (n / norm_scale + 1.0), jnp.zeros_like(n))
    split = ok & (eta < jnp.finfo(dtype).tiny)
    s = jnp.asarray(norm_scale).astype(dtype)
    k, u = _pow2_below(big)
    # s 2^k / big = s / (f 2^(e-k)), f in [1/2, 1): the mantissa part then the exponent.
    frac, e = jnp.frexp(big)
    v = jnp.ldexp(s / frac, k - e) / (s / big + rest)
    return eta, jnp.where(split, u.astype(eta.dtype), eta), jnp.where(split, v, jnp.ones_like(v))


def global_norm(tree: Any) -> jax.Array:
    r"""One L2 norm over every leaf of a pytree, exact for every finite gradient.

    .. math:: n = \sqrt{\textstyle\sum_i \lVert g_i \rVert_2^2}

    The plain sum of squares in the widest dtype of the leaves; where it overflows (a
    float32 gradient above ~1.8e19) or is so small that squares flush to zero, the
    scaled form :math:`2^k \sqrt{\sum (2^{-k} g)^2}`, :math:`2^{k+2} > \max |g|`, is
    taken instead (``lax.cond``: only then computed, except under ``vmap``). Non-finite (inf or nan)
    when some element is, and inf where the norm itself exceeds the dtype's largest
    value (float32: 3.4e38). Sharded leaves under ``jit`` give the norm of the whole
    array (XLA reduces across the shards).

    Args:
        tree: A pytree of floating-point arrays (``None`` leaves are ignored).

    Returns:
        A 0-dim array of the leaves' widest real dtype (``0.`` for an empty tree).
    """
    return _measure(tree)[0]


def modulation(grad_norm: jax.Array, norm_scale: Any = 1.0) -> tuple[jax.Array, jax.Array]:
    r"""The gradient-norm modulation and the finite flag.

    .. math:: \eta = \frac{1}{1 + n / s}, \qquad \text{ok} = \text{isfinite}(n)

    The plain formula: ``eta`` is 0 for a norm above the dtype's largest value and
    subnormal (flushed to 0 on XLA's CPU) for ``n / s`` above ~1 / tiny (float32: 8.5e37).
    :func:`scale_by_superlevel` and :func:`superlevel` do not multiply by this ``eta``
    there: they apply it in a scaled form, exact for every finite gradient.

    Args:
        grad_norm: 0-dim array ``n``.
        norm_scale: ``s > 0``, the norm at which the step is halved.

    Returns:
        ``(eta, ok)``, 0-dim arrays; ``eta`` is 0 where not ok.
    """
    ok = jnp.isfinite(grad_norm)
    eta = 1.0 / (grad_norm / norm_scale + 1.0)
    return jnp.where(ok, eta, jnp.zeros_like(eta)), ok


def _increment(count: jax.Array) -> jax.Array:
    """``count + 1``, saturating at the int32 maximum (never wrapping to negative)."""
    return jnp.where(count < jnp.iinfo(count.dtype).max, count + 1, count)


def _times(u: jax.Array, v: jax.Array, tree: Any) -> Any:
    """``(u x) v`` for every leaf ``x`` (see :func:`_factors`)."""
    return jax.tree.map(lambda x: (u.astype(x.dtype) * x) * v.astype(x.dtype), tree)


# ---------------------------------------------------------------- schedule
def decay_schedule(learning_rate: Any, decay: Any = 0.0, min_lr: Any = 0.0) -> optax.Schedule:
    r"""The exponentially decayed learning rate with a floor, ``a_t`` of the torch optimizer.

    .. math:: a_t = \max(\text{lr} \cdot e^{-\beta t}, \text{min\_lr})

    Computed as ``SuperLevelSGD`` computes it (``exp(-decay * t)`` times ``lr``, then the
    floor), in float64 under ``jax_enable_x64``, else float32.

    Args:
        learning_rate: ``a_0 >= 0`` (a number, or a 0-dim array: traced under ``vmap``).
        decay: ``beta >= 0``, per step.
        min_lr: The floor, ``>= 0``.

    Returns:
        ``count -> a_count``, an optax schedule (``count``: completed steps).

    Raises:
        TypeError, ValueError: a hyperparameter of the wrong kind or outside its domain,
            named (values known now; traced values are not checked).
    """
    _check("learning_rate", learning_rate)
    _check("decay", decay)
    _check("min_lr", min_lr)

    def schedule(count: jax.Array) -> jax.Array:
        t = jnp.asarray(count).astype(jnp.result_type(float))
        a = learning_rate * (jnp.exp(t * -decay) if not _is_zero(decay) else jnp.ones_like(t))
        return a if _is_zero(min_lr) else jnp.maximum(a, min_lr)

    return schedule


# ---------------------------------------------------------------- the modulation alone
class ScaleBySuperlevelState(NamedTuple):
    """State of :func:`scale_by_superlevel`: the last norm ``n_t`` and ``eta_t``."""

    grad_norm: jax.Array
    scale: jax.Array


def scale_by_superlevel(norm_scale: Any = 1.0) -> optax.GradientTransformation:
    r"""The modulation alone: one global norm over the whole update pytree.

    .. math:: g \leftarrow \frac{g}{1 + \lVert g \rVert / s}

    For chains of your own: ``optax.chain(scale_by_superlevel(), optax.sgd(a))`` is the
    rule without momentum. With momentum the rule scales the *momentum buffer* by the
    *gradient's* ``eta_t``, which a transform before ``optax.trace`` cannot do; that is
    :func:`superlevel`. A non-finite input gives a non-finite output (wrap the chain in
    ``optax.apply_if_finite`` to skip it); :func:`superlevel` skips by itself.

    Exact for every finite input: where ``||g||`` exceeds the dtype's largest value (a
    float32 gradient of norm above 3.4e38) or ``eta`` is below its smallest normal
    number, ``g * eta`` is applied as ``(g * 2^-k) * v`` (see ``_factors``); the state
    then holds ``grad_norm = inf`` (above the dtype) and ``scale = 0`` (or a subnormal
    ``eta``, where the backend keeps subnormals).

    Args:
        norm_scale: ``s > 0``.

    Returns:
        An ``optax.GradientTransformation`` with state :class:`ScaleBySuperlevelState`.
    """
    _check("norm_scale", norm_scale, positive=True)

    def init(params: Any) -> ScaleBySuperlevelState:
        dtype = _real_dtype(jax.tree.leaves(params)) if jax.tree.leaves(params) else float
        zero = jnp.zeros((), dtype)
        return ScaleBySuperlevelState(grad_norm=zero, scale=zero)

    def update(updates: Any, state: ScaleBySuperlevelState, params: Any = None):
        del params
        n, ok, big, rest = _measure(updates)
        eta, u, v = _factors(n, ok, big, rest, norm_scale)
        return _times(u, v, updates), ScaleBySuperlevelState(
            grad_norm=n.astype(state.grad_norm.dtype), scale=eta.astype(state.scale.dtype)
        )

    return optax.GradientTransformation(init, update)


def _scale_by_eta() -> optax.GradientTransformationExtraArgs:
    """Multiply by the ``eta_t`` the optimizer hands its chain as an extra argument: the
    factors ``(u, v)`` of :func:`_factors` (the momentum buffer times the gradient's eta)."""

    def update(updates: Any, state: Any, params: Any = None, **extra: Any):
        del params
        return _times(*extra[_ETA_ARG], updates), state

    return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update)


# ---------------------------------------------------------------- the optimizer
class SuperlevelState(NamedTuple):
    """State of :func:`superlevel`: what ``SuperLevelSGD.stats()`` gives, and the chain's.

    Attributes:
        step: ``t``, completed (non-skipped) steps (int32).
        skipped: Steps skipped for a non-finite gradient (int32).
        grad_norm: ``n_t`` of the last update (inf or nan when it was skipped; inf also
            for a finite gradient whose norm exceeds the dtype, float32: 3.4e38).
        scale: ``eta_t`` of the last update (0 when skipped; 0, or a subnormal where the
            backend keeps subnormals, when ``eta_t`` is below the dtype's smallest normal
            number: the update itself is exact then).
        lr: ``a_t`` the last update used (before it: the ``a_0`` of the first step).
        effective_lr: ``a_t * eta_t`` of the last update (0 where ``scale`` is, or where
            the product is below the dtype's smallest normal number).
        inner_state: The state of the optax chain (``trace``'s momentum buffer,
            ``scale_by_learning_rate``'s count, equal to ``step``).
    """

    step: jax.Array
    skipped: jax.Array
    grad_norm: jax.Array
    scale: jax.Array
    lr: jax.Array
    effective_lr: jax.Array
    inner_state: Any


def superlevel(
    learning_rate: Any,
    decay: Any = 0.0,
    min_lr: Any = 0.0,
    momentum: Any = 0.0,
    nesterov: bool = False,
    weight_decay: Any = 0.0,
    norm_scale: Any = 1.0,
    maximize: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""SuperLevelSGD as an optax optimizer (the torch class's rule, with ``dampening=0``).

    .. math::
        b \leftarrow \mu b + g, \quad d = g + \mu b \text{ (Nesterov) or } b, \quad
        p \leftarrow p - a_t (\eta_t d + \lambda p)

    with ``a_t`` from :func:`decay_schedule`, ``eta_t = 1 / (1 + ||grad|| / s)`` of the
    incoming gradient pytree and ``g = -grad`` when ``maximize``. An ``optax.chain`` of
    ``optax.scale(-1)`` (maximize), ``optax.trace`` (momentum), the modulation,
    ``optax.add_decayed_weights`` and ``optax.scale_by_learning_rate``. A non-finite
    gradient (an inf or nan element) skips the update as torch's ``nonfinite="skip"``
    does: zero updates, the momentum buffer and ``t`` unchanged, ``skipped`` counted.
    Every finite gradient steps as torch's float64-accumulated rule does, also where its
    norm exceeds the dtype (float32: 3.4e38) or ``eta_t`` is subnormal: the gradient (or
    momentum buffer) times ``eta_t`` is then applied as ``(d * 2^-k) * v``, exact algebra
    with normal factors (``stats`` then report ``grad_norm = inf``, ``scale = 0``).

    Every number may be an array, so ``optax.inject_hyperparams(superlevel)`` and
    ``jax.vmap`` over the hyperparameters work; a Python ``0`` leaves its transform out.

    Args:
        learning_rate: ``a_0 >= 0``.
        decay: ``beta >= 0``, per completed step.
        min_lr: Floor of ``a_t``, ``>= 0``.
        momentum: ``mu >= 0`` (0: no momentum buffer).
        nesterov: Nesterov momentum (needs ``momentum > 0``).
        weight_decay: ``lambda >= 0``, decoupled (not modulated), times ``a_t``.
        norm_scale: ``s > 0``.
        maximize: Ascend instead of descend.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` with state :class:`SuperlevelState`.

    Raises:
        TypeError, ValueError: A hyperparameter of the wrong kind or outside its domain,
            named (values known now; traced values are not checked).
    """
    lr = _check("learning_rate", learning_rate)
    floor = _check("min_lr", min_lr)
    mu = _check("momentum", momentum)
    wd = _check("weight_decay", weight_decay)
    _check("decay", decay)
    _check("norm_scale", norm_scale, positive=True)
    _check_flag("nesterov", nesterov)
    _check_flag("maximize", maximize)
    if nesterov and (_is_zero(momentum) or (mu is not None and mu <= 0.0)):
        raise ValueError(f"nesterov=True needs momentum > 0, got momentum={momentum!r}")
    if lr is not None and floor is not None and wd is not None and max(lr, floor) * wd > 1.0:
        raise ValueError(
            f"weight_decay={weight_decay!r} with learning_rate={learning_rate!r}, "
            f"min_lr={min_lr!r}: max(learning_rate, min_lr) * weight_decay must be <= 1 (the "
            f"decay factor 1 - a_t * weight_decay would be negative)"
        )
    schedule = decay_schedule(learning_rate, decay, min_lr)
    chain = optax.chain(
        *([optax.scale(-1.0)] if maximize else []),
        *([] if _is_zero(momentum) else [optax.trace(momentum, nesterov=nesterov)]),
        _scale_by_eta(),
        *([] if _is_zero(weight_decay) else [optax.add_decayed_weights(weight_decay)]),
        optax.scale_by_learning_rate(schedule),
    )

    def init(params: Any) -> SuperlevelState:
        leaves = jax.tree.leaves(params)
        dtype = _real_dtype(leaves) if leaves else jnp.result_type(float)
        zero = jnp.zeros((), dtype)
        count = jnp.zeros((), jnp.int32)
        return SuperlevelState(
            step=count,
            skipped=count,
            grad_norm=zero,
            scale=zero,
            lr=schedule(count).astype(dtype),
            effective_lr=zero,
            inner_state=chain.init(params),
        )

    def update(updates: Any, state: SuperlevelState, params: Any = None, **extra: Any):
        n, ok, big, rest = _measure(updates)
        # ok: every element finite. A finite gradient whose norm exceeds the dtype (n = inf)
        # or whose eta is subnormal still steps: by (u, v), not by eta itself.
        eta, u, v = _factors(n, ok, big, rest, norm_scale)
        new, inner = chain.update(updates, state.inner_state, params, **{_ETA_ARG: (u, v)}, **extra)
        # Selected, not multiplied: 0 * inf = nan. The old state keeps buffer and count.
        new = jax.tree.map(lambda u: jnp.where(ok, u, jnp.zeros_like(u)), new)
        inner = jax.tree.map(lambda a, b: jnp.where(ok, a, b), inner, state.inner_state)
        dtype = state.grad_norm.dtype
        a = schedule(state.step).astype(dtype)
        eta = eta.astype(dtype)
        return new, SuperlevelState(
            step=jnp.where(ok, _increment(state.step), state.step),
            skipped=jnp.where(ok, state.skipped, _increment(state.skipped)),
            grad_norm=n.astype(dtype),
            scale=eta,
            lr=a,
            effective_lr=a * eta,
            inner_state=inner,
        )

    return optax.GradientTransformationExtraArgs(init, update)


# ---------------------------------------------------------------- statistics
def stats(state: Any) -> dict[str, jax.Array]:
    """What ``SuperLevelSGD.stats()`` gives, from the :class:`SuperlevelState` in ``state``.

    ``state`` may be any pytree holding one (``inject_hyperparams``, ``MultiSteps``,
    ``apply_if_finite``, a Flax ``nnx.Optimizer``'s ``opt_state``, whose variables are
    unwrapped); no host read.

    Returns:
        ``{"step", "grad_norm", "scale", "lr", "effective_lr", "skipped"}`` as arrays.

    Raises:
        ValueError: ``state`` holds no :class:`SuperlevelState`, or more than one.
    """
    found = [
        x
        for x in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, SuperlevelState))
        if isinstance(x, SuperlevelState)
    ]
    if len(found) != 1:
        raise ValueError(
            f"stats() needs a state holding exactly one SuperlevelState, found {len(found)} "
            f"in a {type(state).__name__}"
        )
    s = found[0]
    keys = ("step", "grad_norm", "scale", "lr", "effective_lr", "skipped")
    return {k: _array(getattr(s, k)) for k in keys}


def _array(x: Any) -> Any:
    """The array itself, or the one a Flax ``nnx`` variable (``OptArray``) holds."""
    get = getattr(x, "get_value", None)  # duck-typed: no Flax import
    return get() if callable(get) else x
