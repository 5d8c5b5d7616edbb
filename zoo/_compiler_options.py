"""How zoo asks XLA:CPU to compile its programs: kernel libraries and emitters.

Two XLA compile options, each measured on the 2-core CPU of
``docs/benchmarks.md``:

* **Convolutions to XLA's own kernels.** XLA:CPU hands some operations to
  kernel libraries: by default YNNPACK takes matrix products, reductions and
  convolutions. XLA's own convolution kernels (Eigen's, threaded over the cores)
  train every zoo CNN faster, by 3-26 % per step (``benchmarks/conv_kernels.py``):
  YNNPACK's are quicker only on a first layer of one input channel, and they
  keep one of two cores idle much of the time on the wider layers. So zoo keeps
  YNNPACK for matrix products and reductions and leaves convolutions to XLA.
* **XLA's classic loop emitters for programs with convolutions.** XLA:CPU
  generates the code of elementwise fusions with its newer fusion emitters by
  default. For a convolutional program the classic ones compile in 0.6-0.8x the
  time and run as fast or faster (``cnn``'s step at batch 128: compiled in 1.3 s
  instead of 2.0 s, 13 % less time a step); in an MLP's rolled loop of steps
  they ran 30 % slower, so programs without convolutions keep the default.

Both are compile options, so they apply per program and change no traced
computation: parameters, checkpoints and the conv path are the same either way,
and values agree within float32 rounding. zoo's training step, evaluation step
and ``predict`` choose theirs from their model (one holding an Equinox
convolution layer is convolutional); its initialisers take the classic
emitters too (they draw the same bits). Programs a user jits directly keep
XLA's defaults unless given :func:`compiler_options` too. The environment
variable ``ZOO_CPU_CONV_KERNELS=ynnpack`` (read at import) keeps XLA's defaults
in zoo's programs as well, as does an XLA that does not know an option (both
are internal to XLA; zoo tries each once on a trivial program).
"""

import functools
import os
from collections.abc import Callable
from typing import Any, Literal, cast

import equinox as eqx
import jax
import numpy as np

CpuConvKernels = Literal["xla", "ynnpack"]
"""``"xla"``: XLA's own convolution kernels; ``"ynnpack"``: XLA:CPU's default."""

Options = dict[str, Any]

_YNN_WITHOUT_CONVOLUTIONS: Options = {
    "xla_cpu_experimental_ynn_fusion_type": (
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
    )
}
_CLASSIC_EMITTERS: Options = {"xla_cpu_use_fusion_emitters": False}
_INITIALISERS: Options = {"xla_backend_optimization_level": 1}
"""Initialisers run once: XLA:CPU's optimisation level 1 compiles them in a
third of the time of its default and draws the same bits."""


def _parse(value: str) -> CpuConvKernels:
    setting = value.strip().lower()
    if setting not in ("xla", "ynnpack"):
        raise ValueError(
            f"ZOO_CPU_CONV_KERNELS must be 'xla' or 'ynnpack', got {value!r}."
        )
    return cast(CpuConvKernels, setting)


_kernels: CpuConvKernels = _parse(os.environ.get("ZOO_CPU_CONV_KERNELS", "xla"))


def cpu_conv_kernels() -> CpuConvKernels:
    """Which convolution kernels zoo asks XLA:CPU for (``ZOO_CPU_CONV_KERNELS``).

    ``"xla"`` takes effect only where XLA knows the option:
    :func:`compiler_options` says what zoo's programs are compiled with.
    """
    return _kernels


def compiler_options(
    backend: str | None = None, *, convolutions: bool = False
) -> Options:
    """The XLA options zoo compiles its training and evaluation programs with.

    Args:
        backend: a JAX backend name; ``None`` for ``jax.default_backend()``.
        convolutions: whether the program runs convolutions (zoo's own programs
            ask this of their model).

    Returns:
        On CPU (unless ``ZOO_CPU_CONV_KERNELS=ynnpack``), the option that keeps
        YNNPACK for matrix products and reductions and leaves convolutions to
        XLA's own kernels, and with ``convolutions`` the one for XLA's classic
        loop emitters; elsewhere ``{}``. Pass it to ``jax.jit`` as
        ``compiler_options=`` for the same code in a program of your own.
    """
    backend = jax.default_backend() if backend is None else backend
    if backend != "cpu" or _kernels != "xla":
        return {}
    wanted = [_YNN_WITHOUT_CONVOLUTIONS] + ([_CLASSIC_EMITTERS] if convolutions else [])
    return {k: v for options in wanted if _known(options) for k, v in options.items()}


def initialiser_options(backend: str | None = None) -> Options:
    """The XLA options of zoo's initialisers: on CPU optimisation level 1 and
    the classic loop emitters (where XLA knows them), elsewhere ``{}``."""
    backend = jax.default_backend() if backend is None else backend
    if backend != "cpu":
        return {}
    return {**_INITIALISERS, **(_CLASSIC_EMITTERS if _known(_CLASSIC_EMITTERS) else {})}


def _known(options: Options) -> bool:
    """Whether this XLA takes ``options`` (internal to XLA: older and newer
    ``jaxlib`` releases may not); if not, zoo keeps XLA:CPU's defaults."""
    return _options_known(tuple(options.items()))


@functools.cache
def _options_known(options: tuple[tuple[str, Any], ...]) -> bool:
    try:
        probe = jax.jit(lambda x: x + 1, compiler_options=dict(options))
        probe.lower(np.float32(0)).compile()
    except Exception:  # XLA refuses unknown options: any error means "not here"
        return False
    return True


def _is_convolution(x: Any) -> bool:
    return isinstance(x, eqx.nn.Conv | eqx.nn.ConvTranspose)


def holds_convolution(tree: Any) -> bool:
    """Whether ``tree`` (a model, say) holds an Equinox convolution layer."""
    return any(
        _is_convolution(x) for x in jax.tree.leaves(tree, is_leaf=_is_convolution)
    )


def model_options(model: Any) -> Options:
    """:func:`compiler_options` for a program of ``model``: with ``convolutions``
    if it holds an Equinox convolution layer (a walk over its layers, tens of
    microseconds)."""
    return compiler_options(convolutions=holds_convolution(model))


def call_with_options(
    optioned: Callable[..., Any], plain: Callable[..., Any], *args: Any, **kwargs: Any
) -> Any:
    """``optioned(*args, **kwargs)``, a jit with compile options, or ``plain``,
    the same jit without them, where JAX refuses options: inside another trace
    (``jit``, ``grad``, ``vmap``), whose own options then apply."""
    try:
        return optioned(*args, **kwargs)
    except ValueError as error:
        if "compiler_options" not in str(error):  # options are for top level
            raise
        return plain(*args, **kwargs)


class _CompiledWithOptions:
    """``eqx.filter_jit(fun)``, compiled with ``options(*args, **kwargs)`` when
    it can be (one jit per set of options, built on first use).

    JAX takes compile options at the top level only, so called inside another
    trace (``jit``, ``grad``, ``vmap``) it runs as plain ``eqx.filter_jit``, and
    the enclosing program's options apply.
    """

    def __init__(
        self,
        fun: Callable[..., Any],
        options: Callable[..., Options],
        **jit_kwargs: Any,
    ) -> None:
        self._fun, self._options, self._jit_kwargs = fun, options, jit_kwargs
        self._plain = eqx.filter_jit(fun, **jit_kwargs)
        self._tuned: dict[tuple[tuple[str, Any], ...], Any] = {}
        functools.update_wrapper(self, fun)

    def _pick(self, args: Any, kwargs: Any) -> Any:
        options = self._options(*args, **kwargs)
        if not options:
            return self._plain
        key = tuple(sorted(options.items()))
        if key not in self._tuned:
            jit: Any = eqx.filter_jit  # its overloads do not list jax.jit's options
            self._tuned[key] = jit(
                self._fun, compiler_options=options, **self._jit_kwargs
            )
        return self._tuned[key]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        jitted = self._pick(args, kwargs)
        if jitted is self._plain:
            return jitted(*args, **kwargs)
        return call_with_options(jitted, self._plain, *args, **kwargs)

    def lower(self, *args: Any, **kwargs: Any) -> Any:
        """Lower for the current backend (``jax.stages.Lowered``)."""
        return self._pick(args, kwargs).lower(*args, **kwargs)


def jit_with_options(
    options: Callable[..., Options], **jit_kwargs: Any
) -> Callable[[Callable[..., Any]], Any]:
    """A decorator: ``eqx.filter_jit(fun, **jit_kwargs)``, compiled with
    ``options(*args, **kwargs)`` of each call's arguments."""

    def decorate(fun: Callable[..., Any]) -> Any:
        return _CompiledWithOptions(fun, options, **jit_kwargs)

    return decorate
