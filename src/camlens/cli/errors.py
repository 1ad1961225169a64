"""How every command ends: exit codes and the one ``error:`` line that says what to do.

=====  ==========================================================================================
code   meaning
=====  ==========================================================================================
0      done
1      some inputs failed (listed; the rest is written)
2      usage: the command cannot run as given (nothing done, or a check during the run failed)
3      the run could not go on (disk full, permissions, an internal error); traceback in the log
130    interrupted (Ctrl-C); what was finished is kept
=====  ==========================================================================================

:func:`guarded` wraps a command so that a :class:`~camlens.errors.CamlensError` becomes exit 2
with its message, Ctrl-C exit 130 with the rows kept and the ``--resume`` command, and anything
else exit 3 with the traceback appended to ``OUT/camlens.log`` instead of the terminal.
"""

from __future__ import annotations

import errno
import functools
import inspect
import shlex
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, NoReturn

import typer

from camlens.errors import CamlensError

#: typer's own exits and click's usage errors pass through (typer may bundle its own click).
PASS: tuple[type[BaseException], ...] = (
    typer.Exit,
    typer.Abort,
    *[c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"],
)
CONTEXT = "camlens_context"  # the typer.Context that guarded() asks typer for
_running: ContextVar[tuple[typer.Context, bool]] = ContextVar("camlens_command")
#: Exit codes (docs/cli.md and docs/runs.md list them).
DONE, FAILED_INPUTS, USAGE, STOPPED, INTERRUPTED = 0, 1, 2, 3, 130
#: What to do about an OSError, by errno.
FIXES = {
    errno.ENOSPC: "free some space",
    errno.EDQUOT: "free some space (disk quota exceeded)",
    errno.EACCES: "check the permissions of the files and folders named",
    errno.EPERM: "check the permissions of the files and folders named",
    errno.EROFS: "write to a folder on a writable disk",
}


def fail(message: str, code: int = USAGE) -> NoReturn:
    """Print ``error: message`` (one line) on stderr and exit with ``code``."""
    typer.echo(f"error: {' '.join(printable(message).split())}", err=True)
    raise typer.Exit(code)


def printable(text: str) -> str:
    """``text`` with undecodable file-name bytes (surrogate escapes) as backslash escapes."""
    from camlens.runs.records import path_text

    return path_text(text)


def command_line(ctx: typer.Context, resume: bool = False) -> str:
    """The command being run, rebuilt from its parsed parameters (defaults left out); with
    ``resume``, ``--overwrite`` dropped and ``--resume`` added."""
    words = ["camlens", ctx.info_name or ""]
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if param.name == CONTEXT or (resume and param.name in ("resume", "overwrite")):
            continue
        if value is None or value == param.default or value == ():
            continue
        if param.param_type_name == "argument":
            words += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
        elif getattr(param, "is_flag", False) and isinstance(value, bool):
            names = param.opts if value else getattr(param, "secondary_opts", [])
            words += [max(names, key=len)] if names else []
        else:
            words += [max(param.opts, key=len), str(value)]
    if resume:
        words.append("--resume")
    return " ".join(shlex.quote(printable(w)) for w in words)


def _kept(out: Any) -> int | None:
    """The number of explained rows in the run folder ``out`` (None: no readable run)."""
    from camlens.runs.folder import load_run

    if out is None:
        return None
    try:
        return len(load_run(out))  # a folder's, or an object store's (s3://...)
    except Exception:  # noqa: BLE001  (what the run kept is a courtesy; never a second crash)
        return None


def _where(out: Any) -> str:
    """The run folder ``out`` as messages show it (an object store's URI without credentials)."""
    from camlens.runs.store import is_remote, shown

    return shown(str(out)) if is_remote(out) else str(out)


def _stopped(error: BaseException, out: Any, ctx: typer.Context, resumable: bool) -> NoReturn:
    from camlens.runs.writer import log_traceback

    log = log_traceback(out, command_line(ctx))
    if isinstance(error, OSError):
        what = f"the run could not go on: {error}; {FIXES.get(error.errno or 0, 'fix the cause')}"
    else:
        what = f"internal error ({type(error).__name__}: {str(error)[:300]}); please report it"
    then = (
        f"then {command_line(ctx, resume=True)} continues the run"
        if resumable
        else "then run the command again"
    )
    fail(f"{what}; {then}; the traceback is in {log}", STOPPED)


def _interrupted(out: Any, ctx: typer.Context, resumable: bool) -> NoReturn:
    kept = _kept(out) if resumable else None
    if kept is None:
        fail("interrupted; run the command again", INTERRUPTED)
    fail(
        f"interrupted; {kept} row(s) kept in {_where(out)}; continue with: "
        f"{command_line(ctx, resume=True)}",
        INTERRUPTED,
    )


def failed_inputs(count: int) -> NoReturn:
    """Exit 1 after ``count`` inputs failed (already listed), saying the ``--resume`` command
    that retries them where the command has one."""
    ctx, resumable = _running.get()
    hint = (
        f"fix or remove them; {command_line(ctx, resume=True)} explains what is left"
        if resumable
        else "fix or remove them and run the command again"
    )
    fail(f"{count} input(s) failed (listed above; the rest is written); {hint}", FAILED_INPUTS)


def guarded(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``command`` the exit codes above; its ``out`` parameter is where the log goes, and a
    ``resume`` parameter makes it say how to continue."""
    signature = inspect.signature(command, eval_str=True)  # typer reads Annotated options
    resumable = "resume" in signature.parameters

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        ctx = kwargs.pop(CONTEXT)
        _running.set((ctx, resumable))
        try:
            return command(*args, **kwargs)
        except PASS:
            raise
        except CamlensError as error:
            fail(str(error), getattr(error, "exit_code", USAGE))
        except KeyboardInterrupt:
            _interrupted(kwargs.get("out"), ctx, resumable)
        except Exception as error:  # noqa: BLE001  (exit 3, the traceback in the log)
            _stopped(error, kwargs.get("out"), ctx, resumable)

    extra = inspect.Parameter(CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
    parameters = [*signature.parameters.values(), extra]
    run.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]  # read by inspect
    run.__annotations__ = {**command.__annotations__, CONTEXT: typer.Context}
    return run
