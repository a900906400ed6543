"""`speechops` command line: one entry point, each subcommand owned by its module.

Subcommand modules are imported only when used, so `speechops plan` never loads torch
and `speechops demo` never loads kopf.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, function taking argv, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("speechops.operator_main", "main", "run the operator (kopf) against the current cluster"),
    "plan": ("speechops.plan", "main", "print the manifests a SpeechPipeline would create, or its errors"),
    "backtest": ("speechops.scaling.backtest.cli", "main", "replay a demand trace through the scaling policies"),
    "up": ("speechops_worker.local", "up_main", "run a pipeline on this machine: tritonserver + gateway"),
    "stream": ("speechops_worker.client", "stream_main", "stream a WAV file to a gateway, print results"),
    "demo": ("speechops_worker.local", "demo_main", "run a local pipeline and stream a sample utterance"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items())
    return f"usage: speechops COMMAND [ARGS]\n\ncommands:\n{rows}\n\n`speechops COMMAND --help` for a command's options."


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"speechops: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    return int(getattr(importlib.import_module(module), func)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
