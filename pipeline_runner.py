#!/usr/bin/env python3
"""Command line of the cats-vs-dogs TFX pipeline: `python pipeline_runner.py COMMAND`, or `cats-vs-dogs COMMAND`
where the project is installed.

Builds the parser from the command groups under cli/ (each defines its commands'
flags and what they do) and runs one command. It is the only place where an
error becomes the line a user sees and the exit code (contract.errors).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap

from cli import deploy, history, local_run, monitor, output, photos, quiet_logs, traffic
from contract import errors, interrupts

EXAMPLES = textwrap.dedent("""\
    examples:
      # the demo: generate a small cat/dog image set, then train, evaluate and push
      python pipeline_runner.py run --demo --output-dir runs/demo

      # your own images in <data-dir>/cat/*.jpg and <data-dir>/dog/*.jpg
      python pipeline_runner.py run --data-dir ~/pets --output-dir runs/pets

      # offline: MobileNetV2 ImageNet weights from a local file, 224x224 inputs
      python pipeline_runner.py run --data-dir ~/pets --output-dir runs/pets \\
          --weights ~/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5 --image-size 224

      # a pushed model's base as a weights file: the pretrained start for other photos
      python pipeline_runner.py base-weights --output-dir runs/pets --out ~/pets_base_no_top.h5
      python pipeline_runner.py run --data-dir ~/shelter --output-dir runs/shelter --weights ~/pets_base_no_top.h5

      # classify your own photos with the newest pushed model; Grad-CAM heat maps on the contact sheet
      python pipeline_runner.py predict ~/photos --output-dir runs/pets --explain

      # the pushed versions with their metrics and data spans; serve version 2 again
      python pipeline_runner.py models --output-dir runs/pets
      python pipeline_runner.py rollback --output-dir runs/pets --to 2 --reason "version 3 misreads night photos"

      # retrain every night at 03:00 with cron (prints the line; --install adds it)
      python pipeline_runner.py schedule --local --cron "0 3 * * *" --data-dir ~/pets --output-dir runs/pets

      # Kubeflow Pipelines: compile a KFP v2 package (data and models on a PVC), run it once, run it nightly
      python pipeline_runner.py compile --image registry.example.com/cats-vs-dogs:1 --pvc cats-vs-dogs \\
          --root /mnt/pipeline/cats-vs-dogs --data-dir /mnt/pipeline/images --package cats_vs_dogs.yaml
      python pipeline_runner.py submit --package cats_vs_dogs.yaml --host http://localhost:8080
      python pipeline_runner.py schedule --package cats_vs_dogs.yaml --host http://localhost:8080 \\
          --cron "0 0 3 * * *"

      # rehearse a Kubeflow run on this machine with kfp's local runner
      python pipeline_runner.py compile --image cats-vs-dogs:1 --root "$PWD/runs/kfp" --data-dir ~/pets \\
          --metadata-sqlite "$PWD/runs/kfp/metadata.sqlite" --package runs/kfp.yaml
      python pipeline_runner.py submit --local --package runs/kfp.yaml

      # Vertex AI Pipelines
      python pipeline_runner.py compile --target vertex --image europe-docker.pkg.dev/p/r/cats-vs-dogs:1 \\
          --root gs://my-bucket/cats-vs-dogs --package vertex.yaml
      python pipeline_runner.py submit --package vertex.yaml --vertex-project my-project --region europe-west4
    """)



SCRIPT = "pipeline_runner.py"


def build_parser(prog: str = SCRIPT, targets=None) -> argparse.ArgumentParser:
    """The parser; `prog`: the command as the user started it (the script, or the installed command), which
    its usage lines and examples name; `targets`: where compile, submit and schedule go (default: the list in
    cli/targets/__init__.py)."""
    examples = EXAMPLES if prog == SCRIPT else EXAMPLES.replace(f"python {SCRIPT}", prog)
    parser = argparse.ArgumentParser(
        prog=prog, description="Train, validate and ship a cat/dog classifier with TFX.",
        epilog=examples, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (*local_run.COMMANDS, *history.COMMANDS, *photos.COMMANDS, *traffic.COMMANDS, *monitor.COMMANDS,
                    *deploy.commands(targets)):
        with_examples = {"epilog": examples, "formatter_class": argparse.RawDescriptionHelpFormatter}
        sub = commands.add_parser(command.name, help=command.summary, description=command.description,
                                  **(with_examples if command.with_examples else {}))
        command.add_flags(sub)
        sub.set_defaults(handler=command.handler)
    return parser


def _unraisable(unraisable) -> None:
    """Ctrl-C that lands in a finalizer (a tf.data iterator's, a generator's while the interpreter unwinds) is
    the interrupt the command already says in its one line: not also Python's "Exception ignored in" block. So is
    the error C code made of one (contract.interrupts.from_ctrl_c)."""
    if not interrupts.from_ctrl_c(unraisable.exc_value):
        sys.__unraisablehook__(unraisable)


def _printed_by_c_code(kind, value, traceback) -> None:
    """C code that cannot raise an error prints it (`PyErr_Print`, which TensorFlow's C++ calls, prints through
    sys.excepthook): a Ctrl-C that landed there, as the SystemError "... returned a result with an exception set"
    it becomes, is the interrupt the command says in its one line, not a traceback. A Ctrl-C escaping the command
    never gets here: main() turns it into that line."""
    if not interrupts.from_ctrl_c(value):
        sys.__excepthook__(kind, value, traceback)


def _ctrl_c_printed_once() -> None:
    sys.unraisablehook, sys.excepthook = _unraisable, _printed_by_c_code


def main(argv: list[str] | None = None, prog: str = SCRIPT, targets=None) -> int:
    """Runs one command; the only place that turns an error into its one line and exit code (contract.errors)."""
    args = build_parser(prog, targets).parse_args(argv)
    quiet_logs.apply(getattr(args, "verbose", False))
    _ctrl_c_printed_once()
    interrupts.release_stale()  # a guard an earlier command in this process left holding SIGINT
    try:
        return args.handler(args)
    except errors.CommandError as error:
        return errors.end(error, args.command)
    except Exception as error:  # a full disk or a permission is foreseeable; anything else keeps its traceback
        if interrupts.from_ctrl_c(error):  # a Ctrl-C that C code turned into another error
            return _interrupted(args.command)
        fault = errors.storage_fault(error)
        if fault is None:
            raise
        return errors.end(fault, args.command)
    except KeyboardInterrupt:
        return _interrupted(args.command)


def _interrupted(command: str) -> int:
    print(f"interrupted: `{command}` stopped before it finished", file=sys.stderr)
    # What the interrupt left half-built (a loop's tensor arrays, say) is collected after this line, and TensorFlow
    # logs each such object, with the stack it was made on, as an error: dozens of lines under the one that says
    # what happened. The next command's start sets the level again (cli.quiet_logs).
    logging.getLogger("tensorflow").setLevel(logging.CRITICAL)
    return errors.INTERRUPTED


def entry_point() -> None:
    """The installed `cats-vs-dogs` command (under whatever name it was installed or linked as), and
    `python pipeline_runner.py`: stdout and stderr guarded for a reader that leaves early (cli.output)."""
    output.guard()
    try:
        code = main(prog=os.path.basename(sys.argv[0]) or "cats-vs-dogs")
    except SystemExit as stop:  # argparse's --help, or its refusal of a flag, once printed
        code = stop.code
    sys.exit(output.finish(code))


if __name__ == "__main__":
    entry_point()
