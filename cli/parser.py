"""The `recipe` command line's arguments: one argparse parser, a sub-parser per command.

argparse (standard library) rather than a CLI framework: `recipe plan` is meant to answer in a fraction
of a second, and a framework's import was a sixth of its whole process (benchmarks/plan_speed.py).
Usage mistakes exit 2 with the command's usage line, the problem, and a "did you mean" for a mistyped
command or option.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, NoReturn, Optional

SET_HELP = "Override a recipe key, e.g. --set method.rank=32 (repeatable; null removes a key)."


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that says "did you mean" for an unknown option or command."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)  # --form is not --format: a typo should not half-work
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def option_names(self) -> list[str]:
        return [name for action in self._actions for name in action.option_strings
                if action.help is not argparse.SUPPRESS]

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}{_hint(message, self)}\n")


def _hint(message: str, parser: Parser) -> str:
    """ " (did you mean --format?)" for an unrecognised option or an invalid command choice."""
    import difflib  # only on a usage mistake

    if message.startswith("unrecognized arguments:"):
        words = message.split(":", 1)[1].split()
        guesses = [(w, m[0]) for w in words if w.startswith("-")
                   for m in [difflib.get_close_matches(w.split("=", 1)[0], parser.option_names(), 1, 0.6)] if m]
        if len(guesses) == 1:
            return f" (did you mean {guesses[0][1]}?)"
        return f" (did you mean {', '.join(f'{m} for {w}' for w, m in guesses)}?)" if guesses else ""
    if "invalid choice:" in message and "(choose from" in message:
        word = message.split("invalid choice:", 1)[1].split("(choose from", 1)[0].strip().strip("'")
        choices = [c.strip().strip("'") for c in message.rsplit("(choose from", 1)[1].rstrip(")").split(",")]
        match = difflib.get_close_matches(word, choices, 1, 0.6)
        return f" (did you mean '{match[0]}'?)" if match else ""
    return ""


def number(kind: Callable[[str], float], minimum: float) -> Callable[[str], float]:
    """An argparse type: an int or float at least `minimum`."""

    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is below the minimum, {minimum:g}")
        return value

    convert.__name__ = kind.__name__  # argparse names the type in its messages
    return convert


def _set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="set_", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)


def _command(sub, name: str, func: Callable) -> Parser:
    """A sub-parser whose help is the first line of the function's docstring (the whole docstring under -h)."""
    doc = (func.__doc__ or "").strip()
    p = sub.add_parser(name, help=doc.splitlines()[0] if doc else None, description=doc)
    p.set_defaults(func=func)
    return p


def build(commands, version: str) -> Parser:
    """The parser of `recipe` and its commands; `commands` is the module holding the command functions."""
    root = Parser(prog="recipe", description="Declarative LoRA / QLoRA / DoRA fine-tuning: validate, plan and "
                                             "run recipes.")
    root.add_argument("--version", action="version", version=f"recipe {version}", help="Print the version and exit.")
    sub = root.add_subparsers(title="commands", metavar="COMMAND", parser_class=Parser)

    p = _command(sub, "validate", commands.validate)
    p.add_argument("paths", nargs="+", metavar="PATH", help="Recipe files, directories or glob patterns.")
    _set(p)
    p.add_argument("-q", "--quiet", action="store_true", help="Print only problems.")

    p = _command(sub, "plan", commands.plan)
    p.add_argument("recipe", help="The recipe file (YAML or TOML).")
    _set(p)
    p.add_argument("-f", "--format", default="text", choices=("text", "json", "markdown"), help="text | json | markdown")
    p.add_argument("-o", "--output", type=Path, help="Write the plan as a lock file that `recipe run` executes.")
    p.add_argument("--trace", action="store_true", help="Also measure the step on fake tensors (needs the [train] "
                                                        "extra; no GPU, no weights).")
    p.add_argument("--compare", action="store_true", help="Plan the same recipe at 2-4 sizes of its model's family: "
                                                          "training cost, serving cost, break-even (needs economics: "
                                                          "in the recipe).")
    p.add_argument("--bench", type=Path, help="Serving throughput measured by `recipe bench`: a bench_report.json, "
                                              "a run directory (its latest), or `latest` (the recipe's run "
                                              "directory's), instead of the catalog's estimate.")

    p = _command(sub, "run", commands.run_command)
    p.add_argument("target", help="A recipe (YAML or TOML), or a plan lock file from `recipe plan -o`.")
    _set(p)
    p.add_argument("--resume", action="store_true", help="Continue from the last complete checkpoint.")
    p.add_argument("--fresh", action="store_true", help="Start over: move an earlier run in output.dir aside "
                                                        "(to RUN_DIR.1, ...; nothing is deleted).")
    p.add_argument("--replan", action="store_true",
                   help="Re-plan a stale lock file (or one given --set) instead of refusing it.")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one of a launcher's processes

    p = _command(sub, "launch", commands.launch)
    p.add_argument("recipe", help="The recipe (or a plan lock file).")
    p.add_argument("--target", default="accelerate", choices=("accelerate", "torchrun", "skypilot"),
                   help="accelerate | torchrun | skypilot")
    _set(p)
    p.add_argument("-o", "--output", type=Path, help="Where to write (default RUN_DIR/launch).")

    p = _command(sub, "eval", commands.eval_)
    p.add_argument("recipe", help="The recipe whose held-out data and metric to use.")
    p.add_argument("--adapter", type=Path, help="A PEFT adapter directory, or a merged model directory; omitted: "
                                                "the base model.")
    _set(p)
    p.add_argument("-f", "--format", default="text", choices=("text", "json"), help="text | json")

    p = _command(sub, "export", commands.export)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="A run directory (the recipe's output.dir).")
    p.add_argument("--merge", action="store_true", help="Merge the adapter into the base and save safetensors.")
    p.add_argument("-o", "--output", type=Path, help="Where to save the merged model (default RUN_DIR/merged).")

    p = _command(sub, "bench", commands.bench)
    p.add_argument("target", help="The recipe, or its run directory (output.dir).")
    p.add_argument("--endpoint", action="append", default=[], help="An OpenAI-compatible base URL; twice: the tuned "
                                                                   "model, then the API it replaces, side by side.")
    p.add_argument("--serve", action="store_true", help="Start the run's exported model on 127.0.0.1 for the bench "
                                                        "(vLLM with a GPU, else transformers); stopped at the end.")
    p.add_argument("--model-dir", type=Path, help="With --serve: this model directory instead of the run's merged/ "
                                                  "or adapter/.")
    p.add_argument("--model", action="append", default=[], help="Model name to ask each endpoint for, in order "
                                                                "(default: the recipe's name, then economics.api_model).")
    p.add_argument("--api-key-env", action="append", default=[], help="Environment variable holding each endpoint's "
                                                                      "API key, in order (default for non-loopback "
                                                                      "URLs: OPENAI_API_KEY).")
    p.add_argument("--rate", type=number(float, 0.001), help="Requests per second (open loop).")
    p.add_argument("--concurrency", type=number(int, 1), help="Requests in flight (closed loop).")
    p.add_argument("--duration", type=number(float, 0.1), default=60.0, help="Seconds during which requests start.")
    p.add_argument("--requests", type=number(int, 1), default=500, help="Most requests to send.")
    p.add_argument("--timeout", type=number(float, 0.1), default=60.0, help="Seconds before a request counts as "
                                                                            "timed out.")
    p.add_argument("--max-tokens", type=number(int, 1), help="Output tokens per request (default: "
                                                             "economics.output_tokens_per_request).")
    p.add_argument("--warmup", type=number(int, 0), default=1, help="Unmeasured requests sent to each endpoint first.")
    p.add_argument("--gpu", help="The catalog GPU the tuned model runs on, to price it and to feed "
                                 "`recipe plan --bench`.")
    p.add_argument("--gpu-count", type=number(int, 1), default=1, help="GPUs behind the tuned endpoint.")
    p.add_argument("-o", "--output", type=Path, help="Report directory (default RUN_DIR/bench/<UTC time>).")
    p.add_argument("--serve-timeout", type=number(float, 1), default=300.0, help="Seconds to wait for --serve's "
                                                                                 "server.")
    _set(p)

    p = _command(sub, "demo", commands.demo)
    p.add_argument("directory", nargs="?", type=Path, default=Path("quickstart"),
                   help="Where to write the demo (default quickstart); `preference` writes the preference-tuning "
                        "(DPO) demo to preference/.")
    p.add_argument("--run", dest="train_now", action="store_true", help="Also train it (a few minutes on a CPU).")
    p.add_argument("--force", action="store_true", help="Overwrite demo files that were edited (or not written by "
                                                        "the demo).")
    p.add_argument("--preference", action="store_true", help="Write the preference-tuning (DPO) demo.")

    p = _command(sub, "calibrate", commands.calibrate)
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="Run directories `recipe run` wrote "
                                                                             "(with run_report.json).")
    p.add_argument("-o", "--output", type=Path, default=Path(".recipe/calibration.json"),
                   help="The calibration file (later plans find it in the recipe's directory or a parent, up to "
                        "the repository root).")

    p = _command(sub, "schema", commands.schema)
    p.add_argument("-o", "--output", type=Path, help="Write to a file instead of stdout.")
    return root


def parse(parser: Parser, argv: list[str]) -> Optional[argparse.Namespace]:
    """The parsed arguments, or None when there is no command (the help is printed). Unknown options are
    reported by the command's own parser, so that its usage line and option names are the ones shown."""
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return None
    if extra:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        name = next(w for w in argv if w in sub.choices)
        sub.choices[name].error(f"unrecognized arguments: {' '.join(extra)}")
    return args
