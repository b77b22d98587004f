"""``@rl_triplet``: one triplet per call of a function, method, coroutine function, generator or
async generator."""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any, TypeVar, overload

from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind

from . import _runtime
from ._capture import JSON, capture, output_fields
from ._config import CaptureMode, ConfigError

F = TypeVar("F", bound=Callable[..., Any])

KeySpec = str | Callable[..., Any] | None

_MISSING = object()


def _path_getter(path: list[str]) -> Callable[[dict[str, Any]], Any]:
    def get(arguments: dict[str, Any]) -> Any:
        v: Any = arguments.get(path[0], _MISSING)
        for part in path[1:]:
            if v is _MISSING or v is None:
                return None
            if isinstance(v, dict):
                v = v.get(part, _MISSING)
            else:
                v = getattr(v, part, _MISSING)
        return None if v is _MISSING else v

    return get


class _Key:
    """A sequence key given to the decorator: a literal, a path into the arguments
    (``"input_data.task_id"``, ``"self.task_id"``) or a callable of the call's arguments."""

    __slots__ = ("fn", "literal", "path")

    def __init__(self, spec: KeySpec, params: list[str], what: str) -> None:
        self.literal: str | None = None
        self.path: Callable[[dict[str, Any]], Any] | None = None
        self.fn: Callable[..., Any] | None = None
        if callable(spec):
            self.fn = spec
        elif isinstance(spec, str):
            parts = spec.split(".")
            if parts[0] in params:
                self.path = _path_getter(parts)
            else:
                self.literal = spec
        elif spec is not None:
            raise ConfigError(what, f"expected a string, a path into the arguments or a callable, got {spec!r}")

    @property
    def needs_arguments(self) -> bool:
        return self.path is not None

    def get(self, arguments: dict[str, Any] | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        if self.literal is not None:
            return self.literal
        try:
            if self.path is not None and arguments is not None:
                v = self.path(arguments)
            elif self.fn is not None:
                v = self.fn(*args, **kwargs)
            else:
                return None
        except Exception:
            return None
        if v is None:
            return None
        return v if isinstance(v, str) else str(v)


@overload
def rl_triplet(func: F, /) -> F: ...


@overload
def rl_triplet(
    func: None = None,
    /,
    *,
    role: str | None = None,
    scope: str | None = None,
    task_id: KeySpec = None,
    session_id: KeySpec = None,
    sequence_id: KeySpec = None,
    state_capturer: Callable[..., Any] | None = None,
    action_capturer: Callable[[Any], Any] | None = None,
    capture: str | None = None,
    name: str | None = None,
    skip: tuple[str, ...] | list[str] = (),
    latency_budget_s: float | None = None,
) -> Callable[[F], F]: ...


def rl_triplet(
    func: F | None = None,
    /,
    *,
    role: str | None = None,
    scope: str | None = None,
    task_id: KeySpec = None,
    session_id: KeySpec = None,
    sequence_id: KeySpec = None,
    state_capturer: Callable[..., Any] | None = None,
    action_capturer: Callable[[Any], Any] | None = None,
    capture: str | None = None,
    name: str | None = None,
    skip: tuple[str, ...] | list[str] = (),
    latency_budget_s: float | None = None,
) -> F | Callable[[F], F]:
    """Make every call of the decorated callable one triplet (an OpenTelemetry span carrying the
    ``rl.*`` attributes of DESIGN section 3).

    - ``role``: ``state.agent_role``; default: the instance's ``agent_role`` or ``agent_name``.
    - ``scope``: ``pipeline`` (``{task_id}``, the default), ``agent`` (``{task_id}:{role}``),
      ``session`` (``{session_id}``) or ``custom`` (``sequence_id``). Without ``scope``, a
      ``sequence_id`` implies ``custom`` and a lone ``session_id`` implies ``session``.
    - ``task_id``, ``session_id``, ``sequence_id``: a literal, a path into the arguments whose
      first part names a parameter (``"input_data.task_id"``, ``"self.task_id"``), or a callable
      taking the call's arguments. A triplet without its scope's key continues the sequence of the
      enclosing triplet (task and session ids are inherited); with no enclosing one it uses its
      trace id.
    - ``state_capturer(*args, **kwargs)``: its value is recorded as ``state.args`` instead of the
      arguments; ``action_capturer(result)``: its value is recorded as ``action.output``.
    - ``capture``: capture mode for this function (``full``, ``truncate:N``, ``hash``, ``none``).
    - ``skip``: argument names not captured. ``self`` and ``cls`` never are.

    Exceptions are recorded (``error_type``, ``error_message``, span status and exception
    event) and re-raised. Without :func:`rltrace.configure` the function runs untouched.

    >>> import rltrace
    >>> class CodeAgent:
    ...     agent_role = "Code"
    ...     @rltrace.rl_triplet(task_id="task.id")
    ...     def execute(self, task: dict[str, str]) -> str:
    ...         return "patch"
    """

    def decorate(fn: F) -> F:
        return _wrap(
            fn,
            role=role,
            scope=scope,
            task_id=task_id,
            session_id=session_id,
            sequence_id=sequence_id,
            state_capturer=state_capturer,
            action_capturer=action_capturer,
            capture_text=capture,
            name=name,
            skip=tuple(skip),
            latency_budget_s=latency_budget_s,
        )

    if func is not None:
        return decorate(func)
    return decorate


def _wrap(
    fn: F,
    *,
    role: str | None,
    scope: str | None,
    task_id: KeySpec,
    session_id: KeySpec,
    sequence_id: KeySpec,
    state_capturer: Callable[..., Any] | None,
    action_capturer: Callable[[Any], Any] | None,
    capture_text: str | None,
    name: str | None,
    skip: tuple[str, ...],
    latency_budget_s: float | None,
) -> F:
    if scope is None:
        if sequence_id is not None:
            scope = "custom"
        elif session_id is not None and task_id is None:
            scope = "session"
        else:
            scope = "pipeline"
    if scope not in _runtime.SCOPES:
        raise ConfigError("scope", f"expected pipeline, agent, session or custom, got {scope!r}")
    mode = CaptureMode.parse(capture_text, "capture") if capture_text is not None else None
    sig = inspect.signature(fn)
    params = list(sig.parameters)
    for s in skip:
        if s not in params:
            raise ConfigError("skip", f"{s!r} is not a parameter of {fn.__qualname__}")
    keys = (
        _Key(task_id, params, "task_id"),
        _Key(session_id, params, "session_id"),
        _Key(sequence_id, params, "sequence_id"),
    )
    instance_role = role is None and bool(params) and params[0] in ("self", "cls")
    excluded = {"self", "cls", *skip}
    captured_params = [p for p in params if p not in excluded]
    var_kinds = {
        n: p.kind
        for n, p in sig.parameters.items()
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }
    need_bind = bool(captured_params and state_capturer is None) or any(k.needs_arguments for k in keys)
    has_args = state_capturer is not None or bool(captured_params)
    # Keys that are literals (or absent) are the same at every call.
    static_keys = tuple(k.literal for k in keys) if all(k.path is None and k.fn is None for k in keys) else None
    span_name = name or fn.__qualname__
    function = fn.__name__

    def begin(args: tuple[Any, ...], kwargs: dict[str, Any]) -> _runtime.Call | None:
        rt = _runtime.current()
        if rt is None:
            return None
        arguments: dict[str, Any] | None = None
        if need_bind:
            try:
                b = sig.bind(*args, **kwargs)
                b.apply_defaults()
                arguments = dict(b.arguments)
            except TypeError:
                arguments = None
        r = role
        if instance_role and args:
            inst = args[0]
            r = getattr(inst, "agent_role", None) or getattr(inst, "agent_name", None)
            if r is not None and not isinstance(r, str):
                r = str(r)

        def state_args(m: CaptureMode) -> tuple[str, JSON] | None:
            if state_capturer is not None:
                return "args", capture(state_capturer(*args, **kwargs), m)
            if arguments is None or not captured_params:
                return None
            out: dict[str, JSON] = {}
            for p in captured_params:
                if p in arguments:
                    v = arguments[p]
                    if var_kinds.get(p) is inspect.Parameter.VAR_KEYWORD and isinstance(v, dict):
                        for k2, v2 in v.items():
                            out[k2] = capture(v2, m)
                    else:
                        out[p] = capture(v, m)
            return ("args", out) if out else None

        if static_keys is not None:
            task, session, sequence = static_keys
        else:
            task = keys[0].get(arguments, args, kwargs)
            session = keys[1].get(arguments, args, kwargs)
            sequence = keys[2].get(arguments, args, kwargs)
        return _runtime.start(
            rt,
            otel_context.get_current(),
            name=span_name,
            kind=SpanKind.INTERNAL,
            scope=scope or "pipeline",
            role=r,
            function=function,
            task_id=task,
            session_id=session,
            sequence_id=sequence,
            args=state_args if has_args else None,
            capture_mode=mode,
            latency_budget_s=latency_budget_s,
        )

    def outcome_fields(call: _runtime.Call, result: Any) -> dict[str, JSON]:
        if action_capturer is not None:
            try:
                return output_fields(action_capturer(result), call.mode)
            except Exception as e:
                return {"capture_error": f"{type(e).__name__}: {e}"}
        return output_fields(result, call.mode)

    def fail(call: _runtime.Call, e: BaseException) -> None:
        import asyncio

        if isinstance(e, asyncio.CancelledError):
            call.finish(False, None, "cancelled", {"cancelled": True})
        else:
            call.finish(False, type(e).__name__, str(e) or type(e).__name__, None, exception=e)

    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def agen_wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
            call = begin(args, kwargs)
            if call is None:
                async for item in fn(*args, **kwargs):
                    yield item
                return
            token = call.attach()
            try:
                inner = fn(*args, **kwargs)
            finally:
                call.detach(token)
            n = 0
            to_send: Any = None
            to_throw: BaseException | None = None
            try:
                while True:
                    token = call.attach()
                    try:
                        if to_throw is not None:
                            e, to_throw = to_throw, None
                            item = await inner.athrow(e)
                        else:
                            item = await inner.asend(to_send)
                    except StopAsyncIteration:
                        break
                    finally:
                        call.detach(token)
                    n += 1
                    try:
                        to_send = yield item
                    except GeneratorExit:
                        token = call.attach()
                        try:
                            await inner.aclose()
                        finally:
                            call.detach(token)
                        call.finish(True, fields={"yielded": n, "closed_early": True})
                        raise
                    except BaseException as e:
                        to_throw = e
            except BaseException as e:
                if call.recording:
                    fail(call, e)
                raise
            call.finish(True, fields={"yielded": n})

        return agen_wrapper  # type: ignore[return-value]

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            call = begin(args, kwargs)
            if call is None:
                return (yield from fn(*args, **kwargs))
            token = call.attach()
            try:
                inner = fn(*args, **kwargs)
            finally:
                call.detach(token)
            n = 0
            to_send: Any = None
            to_throw: BaseException | None = None
            try:
                while True:
                    token = call.attach()
                    try:
                        if to_throw is not None:
                            e, to_throw = to_throw, None
                            item = inner.throw(e)
                        else:
                            item = inner.send(to_send)
                    except StopIteration as stop:
                        result = stop.value
                        break
                    finally:
                        call.detach(token)
                    n += 1
                    try:
                        to_send = yield item
                    except GeneratorExit:
                        inner.close()
                        call.finish(True, fields={"yielded": n, "closed_early": True})
                        raise
                    except BaseException as e:
                        to_throw = e
            except BaseException as e:
                if call.recording:
                    fail(call, e)
                raise
            fields = outcome_fields(call, result)
            fields["yielded"] = n
            call.finish(True, fields=fields)
            return result

        return gen_wrapper  # type: ignore[return-value]

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            call = begin(args, kwargs)
            if call is None:
                return await fn(*args, **kwargs)
            token = call.attach()
            try:
                result = await fn(*args, **kwargs)
            except BaseException as e:
                call.detach(token)
                fail(call, e)
                raise
            call.detach(token)
            call.finish(True, fields=outcome_fields(call, result) if call.recording else None)
            return result

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        call = begin(args, kwargs)
        if call is None:
            return fn(*args, **kwargs)
        token = call.attach()
        try:
            result = fn(*args, **kwargs)
        except BaseException as e:
            call.detach(token)
            fail(call, e)
            raise
        call.detach(token)
        call.finish(True, fields=outcome_fields(call, result) if call.recording else None)
        return result

    return wrapper  # type: ignore[return-value]
