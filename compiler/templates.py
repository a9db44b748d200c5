"""The recipe's Jinja2 data templates, rendered in a sandbox with limits.

Recipes are data, not code: templates render in jinja2's immutable sandbox (no attribute of
`__class__`, `__mro__`, `__globals__`, ...; no mutation of lists and dicts), and within limits that
stop a runaway template within seconds instead of hanging `plan` or `run`:

- `range()` yields at most MAX_RANGE numbers;
- no string or list built by `*`, `%`, `+`, `~` into a namespace, `format`, `replace`, `join`,
  `center`, ... may exceed MAX_CHARS, nor may a rendered template;
- `**` takes exponents up to MAX_EXPONENT;
- one record renders in at most SECONDS_PER_RECORD, all of a data set's records in SECONDS_TOTAL.

A refusal is a TemplateLimit (or jinja2's SecurityError), both TemplateErrors: the reader reports
them per record, and `recipe validate` renders the first records to find them early.
"""

from __future__ import annotations

import re
import time
from typing import Any, Optional

MAX_RANGE = 10_000
MAX_CHARS = 1_000_000
MAX_EXPONENT = 64
SECONDS_PER_RECORD = 2.0
SECONDS_TOTAL = 600.0
TICK_EVERY = 256  # loop iterations between clock checks
_BIG_WIDTH = re.compile(r"\d{7,}")  # a field width of a million or more in a format string


def _limit_error():
    from jinja2.exceptions import TemplateRuntimeError

    class TemplateLimit(TemplateRuntimeError):
        """A template went past one of the sandbox's limits."""

    return TemplateLimit


TemplateLimit = _limit_error()


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else 0


def _check_size(value: Any, what: str) -> Any:
    if _size(value) > MAX_CHARS:
        raise TemplateLimit(f"{what} would be {_size(value):,} long; templates build at most {MAX_CHARS:,}")
    return value


class Clock:
    """Deadlines for one record and for all of them."""

    def __init__(self) -> None:
        self.total = 0.0
        self.record_start: Optional[float] = None

    def start(self) -> None:
        self.record_start = time.monotonic()

    def stop(self) -> None:
        if self.record_start is not None:
            self.total += time.monotonic() - self.record_start
            self.record_start = None

    def check(self) -> None:
        if self.record_start is None:
            return
        spent = time.monotonic() - self.record_start
        if spent > SECONDS_PER_RECORD:
            raise TemplateLimit(f"rendering one record took over {SECONDS_PER_RECORD:g} s; stopped "
                                f"(a runaway loop or a huge string?)")
        if self.total + spent > SECONDS_TOTAL:
            raise TemplateLimit(f"rendering the records took over {SECONDS_TOTAL:g} s in all; stopped")


def environment():
    """A sandboxed environment with the limits above (one clock per environment)."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from jinja2.utils import Namespace

    class LimitedRange:
        def __init__(self, *args: int):
            self.range = range(*args)
            if len(self.range) > MAX_RANGE:
                raise TemplateLimit(f"range() of {len(self.range):,} numbers; templates get at most {MAX_RANGE:,}")

        def __len__(self) -> int:
            return len(self.range)

        def __iter__(self):
            for i, n in enumerate(self.range):
                if i % TICK_EVERY == 0:
                    env.clock.check()
                yield n

    class LimitedNamespace(Namespace):
        def __setitem__(self, name: str, value: Any) -> None:
            env.clock.check()
            super().__setitem__(name, _check_size(value, f"namespace value '{name}'"))

    class Limited(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset(["*", "**", "%", "+"])

        def call_binop(self, context, operator, left, right):
            self.clock.check()
            if operator == "**" and isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT \
                    and isinstance(left, (int, float)) and abs(left) > 1:
                raise TemplateLimit(f"exponent {right!r} is too large (at most {MAX_EXPONENT})")
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if _size(seq) and isinstance(n, int) and _size(seq) * n > MAX_CHARS:
                        raise TemplateLimit(f"repeating a value of length {_size(seq):,} {n:,} times exceeds "
                                            f"{MAX_CHARS:,}")
            if operator == "%" and isinstance(left, str) and _BIG_WIDTH.search(left):
                raise TemplateLimit("a field width of a million or more in a % format")
            return _check_size(super().call_binop(context, operator, left, right), f"the result of '{operator}'")

        def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja2's signature)
            __self.clock.check()
            owner = getattr(__obj, "__self__", None)
            if isinstance(owner, str):
                _precheck_str_method(owner, getattr(__obj, "__name__", ""), args, kwargs)
            return _check_size(super().call(__context, __obj, *args, **kwargs), "a value built by a call")

    env = Limited(undefined=StrictUndefined, keep_trailing_newline=True)
    env.clock = Clock()
    env.globals["range"] = LimitedRange
    env.globals["namespace"] = LimitedNamespace
    for name, fn in list(env.filters.items()):
        env.filters[name] = _limited_filter(env, name, fn)
    return env


def _precheck_str_method(s: str, name: str, args: tuple, kwargs: dict) -> None:
    if name in ("format", "format_map") and _BIG_WIDTH.search(s):
        raise TemplateLimit("a field width of a million or more in a format string")
    if name in ("center", "ljust", "rjust", "zfill", "expandtabs"):
        for a in list(args) + list(kwargs.values()):
            if isinstance(a, int) and a > MAX_CHARS:
                raise TemplateLimit(f"{name}({a:,}) exceeds {MAX_CHARS:,} characters")
    if name == "replace" and len(args) >= 2 and isinstance(args[1], str):
        occurrences = s.count(args[0]) if isinstance(args[0], str) and args[0] else len(s) + 1
        if len(s) + occurrences * len(args[1]) > MAX_CHARS:
            raise TemplateLimit(f"replace() would build more than {MAX_CHARS:,} characters")
    if name == "join" and args and isinstance(args[0], (list, tuple)) and len(s) * len(args[0]) > MAX_CHARS:
        raise TemplateLimit(f"join() would build more than {MAX_CHARS:,} characters")


def _limited_filter(env, name: str, fn):
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        env.clock.check()
        values = [a for a in args if not hasattr(a, "environment")]  # skip the context / environment argument
        if values and isinstance(values[0], str):
            if name in ("center", "indent", "wordwrap", "truncate", "format", "replace", "join"):
                method = {"indent": "center", "wordwrap": "center", "truncate": "center"}.get(name, name)
                _precheck_str_method(values[0], method, tuple(values[1:]), kwargs)
            if name == "indent":
                width = next((a for a in values[1:2] if isinstance(a, int)), 4)
                if width * (values[0].count("\n") + 1) + len(values[0]) > MAX_CHARS:
                    raise TemplateLimit(f"indent() would build more than {MAX_CHARS:,} characters")
        if name == "join" and values and hasattr(values[0], "__len__") and len(values) > 1 \
                and isinstance(values[1], str) and len(values[0]) * len(values[1]) > MAX_CHARS:
            raise TemplateLimit(f"join() would build more than {MAX_CHARS:,} characters")
        return _check_size(fn(*args, **kwargs), f"the result of the '{name}' filter")

    return wrapper


def compile_pair(prompt: str, completion: str):
    """(environment, prompt template, completion template), sharing one clock."""
    env = environment()
    return env, env.from_string(prompt), env.from_string(completion)


def render(env, template, row: dict) -> str:
    """Render one record within the limits; TemplateError (located by the caller) when it goes past one."""
    from jinja2 import TemplateError

    env.clock.start()
    try:
        out, size = [], 0
        for chunk in template.generate(**row):
            size += len(chunk)
            if size > MAX_CHARS:
                raise TemplateLimit(f"the rendered text exceeds {MAX_CHARS:,} characters")
            env.clock.check()
            out.append(chunk)
        return "".join(out)
    except RecursionError:
        raise TemplateError("the template recurses too deeply (a macro calling itself?)") from None
    except MemoryError:
        raise TemplateError("the template ran out of memory") from None
    finally:
        env.clock.stop()


def describe(exc: Exception) -> str:
    """A one-line reason for a template error, sandbox refusals included."""
    from jinja2.sandbox import SecurityError

    text = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    if isinstance(exc, SecurityError):
        return f"refused by the sandbox: {text} (recipes are data: templates may not reach Python internals)"
    if isinstance(exc, TemplateLimit):
        return f"stopped: {text}"
    return text
