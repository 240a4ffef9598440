"""`predict` and `base-weights`: using a pushed model on this machine."""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys

from cli import flags, values
from contract import errors
from contract.errors import CommandError, RunFailedError
from contract.layout import RunLayout

SHEET_SUFFIXES = (".png", ".jpg", ".jpeg")  # what Pillow writes the contact sheet as


def _predict_flags(predict: argparse.ArgumentParser) -> None:
    predict.add_argument("paths", nargs="+", type=values.photo_path, help="Image files or folders.")
    where = _add_model_flags(predict, " Or one of its TFLite files, e.g. "
                                      "runs/demo/serving_model/3/assets.extra/model_int8.tflite: the model a device "
                                      "runs, given each photo's pixels as the model was trained on them.")
    where.add_argument("--url", help="Ask a model server instead: a TF Serving or KServe V1 REST endpoint, e.g. "
                                     "http://localhost:8501 (the model cats-vs-dogs there) or the whole address "
                                     "ending in :predict (docs/serving.md). Not with --explain or --record, which "
                                     "need the model's files or its root.")
    flags.add_json(predict)
    predict.add_argument("--sheet", type=flags.local_pathlib,
                         help="Contact sheet PNG to write. Default: <output-dir>/predictions/contact_sheet.png; "
                              "with --model, beside the run that pushed it (./predictions/ for a model elsewhere).")
    predict.add_argument("--explain", action="store_true",
                         help="Overlay Grad-CAM heat maps (MobileNetV2's last convolutional block) on the sheet.")
    predict.add_argument("--record", action="store_true",
                         help="Also record the images the model classified, with its answers and the served "
                              "version, as traffic under <output-dir>/traffic (what the traffic sink records of a "
                              "cluster's predictor), for `monitor` to read. Needs the served model of --output-dir.")


def _base_weights_flags(base: argparse.ArgumentParser) -> None:
    _add_model_flags(base)
    base.add_argument("--out", type=flags.local_pathlib, required=True, help="The weights file to write (.h5).")


def _add_model_flags(parser: argparse.ArgumentParser, model_help: str = ""):
    """--model or --output-dir: where the model is; returns their group (predict adds --url to it)."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--model", type=pathlib.Path,
                       help="A pushed version's folder, e.g. runs/demo/serving_model/3." + model_help)
    flags.add_output_dir(where, "Use the served version under <output-dir>/serving_model: the one its "
                                "models.config names.")
    return where


def _model_dir(args: argparse.Namespace) -> pathlib.Path:
    from contract import served
    from inference import predict

    if args.model:
        from inference import on_device

        # a TFLite file is read once, through a link too; a pushed version's file is checked against its digest
        return args.model if on_device.is_tflite(args.model) else predict.given_model_dir(args.model)
    serving_dir = RunLayout(args.output_dir.resolve()).serving_dir
    for line in served.serving_dir_warnings(str(serving_dir)):
        print(f"warning: {line}", file=sys.stderr)
    return predict.latest_version_dir(serving_dir)


def command_predict(args: argparse.Namespace) -> int:
    """Classify your own photos with the served model (or --model).

    Prints a table (file, class, dog probability) and writes a contact sheet PNG. A file that cannot be read is
    reported on its own line; the others are still classified.
    """
    from contract import startup

    with startup.loading_libraries():
        from inference import contact_sheet, predict

    if args.sheet is not None and args.sheet.suffix.lower() not in SHEET_SUFFIXES:
        raise CommandError(f"--sheet {args.sheet}: the contact sheet is an image; give a path ending in "
                           f"{', '.join(SHEET_SUFFIXES)}")
    remote = args.url is not None  # an empty --url is refused, never taken for the local model
    sheet_path = args.sheet or (_default_sheet(args.output_dir if args.model is None else args.model) if not remote
                                else pathlib.Path("predictions", "contact_sheet.png"))
    contact_sheet.check_path(sheet_path)
    if args.record and args.model:
        raise CommandError("--record records into a root's traffic, beside the model that root serves: give "
                           "--output-dir ROOT instead of --model (a folder given by hand is no root's served version)")
    if remote and (needs := "--explain" if args.explain else "--record" if args.record else None):
        raise CommandError(f"--url asks a server, which gives answers only: {needs} needs the model's files or its "
                           "root; give --output-dir or --model instead")
    if args.record:
        _check_record_root(args.output_dir)
    if remote:
        model_dir, model = None, predict.remote_model(predict.predict_url(args.url, _pipeline_name()))
    else:
        model_dir = _model_dir(args)
        model = _local_model(model_dir, args.explain)
    files, left_out = _photos(args.paths)
    sent: dict[int, bytes] | None = {} if args.record else None
    predictions, jpegs = predict.predict_files(model, files, sent=sent)
    sheet = sheet_error = None
    replaced = False
    if jpegs:  # a sheet of nothing but unreadable files would say less than the table
        path = sheet_path
        try:  # whatever happens to the sheet, the classifications are printed below
            heatmaps = predict.explain(model_dir, jpegs) if args.explain else None
            contact_sheet.check_path(path)  # again: a file put there while the photos were classified
            path.parent.mkdir(parents=True, exist_ok=True)
            replaced = path.exists()  # one sheet per folder: the earlier predict's is written over, and said so
            contact_sheet.save(contact_sheet.render(predictions, jpegs, heatmaps), path)
            sheet = str(path)
        except CommandError as refused:  # a file put at the sheet's path meanwhile: left as it is
            sheet_error, replaced = str(refused), False
        except (OSError, ValueError) as error:
            sheet_error = f"the contact sheet could not be written to {path}: {errors.first_line(error)}"
    shown = predict.shown_url(predict.predict_url(args.url, _pipeline_name())) if remote else str(model_dir)
    if not args.json:  # the classifications first, whatever happens to the recording
        print(f"model: {shown}")
        print(predict.table(predictions))
        if sheet:
            print(f"contact sheet: {sheet}" + (" (replacing the earlier one; --sheet PATH keeps both)" if replaced
                                               else ""))
    recorded = _record(args.output_dir, model_dir, predictions, sent) if args.record else None
    if args.json:
        print(_json_answer(shown, sheet, replaced, sheet_error, predictions, left_out, recorded))
    unreadable = sum(p.error is not None for p in predictions)
    if unreadable == len(predictions) and recorded is None:
        raise CommandError(f"none of the {len(predictions)} files could be classified (reasons above)")
    if unreadable:
        print(f"warning: {unreadable} of {len(predictions)} files could not be classified (marked UNREADABLE)",
              file=sys.stderr)
    failed = [problem for problem in (recorded, sheet_error) if problem]  # each said, the traffic's first
    if failed:
        raise RunFailedError(f"{'; and '.join(failed)} (the classifications are above)")
    return errors.FAILED if unreadable else errors.OK


def _photos(paths: list) -> tuple[list[pathlib.Path], dict]:
    """The files to classify (inference.predict.find_files), and what was left out, each said in a note."""
    from inference import photo_files, predict
    from ingest import system_files

    passed_over, roots, same = [], [], []
    files = predict.find_files(paths, passed_over, roots, same)
    if same:
        print(f"note: {photo_files.same_files_phrase(same)}", file=sys.stderr)
    if passed_over:
        print(f"note: passed over {system_files.passed_over_phrase(passed_over)}: not photos", file=sys.stderr)
    if roots:
        print(f"note: passed over {', '.join(map(errors.shown_name, map(str, roots)))}: a pipeline's root (its models, "
              "reports and queues), not photos; name a folder inside it to classify what it holds", file=sys.stderr)
    if not files:
        only = [what for what, found in (("a pipeline's root", roots),
                                         ("files and folders the operating system keeps", passed_over)) if found]
        raise CommandError("no files found in " + ", ".join(errors.shown_name(str(path)) for path in paths)
                           + (f": only {' and '.join(only)}" if only else ""))
    return files, {"passed_over": passed_over, "same_file": same}


def _local_model(model_dir: pathlib.Path, explain: bool):
    """The classifier of a pushed version's folder, or of one of its TFLite files (--model FILE.tflite)."""
    from contract import layout
    from inference import on_device, predict

    if on_device.is_tflite(model_dir):
        if explain:
            raise CommandError(f"--explain draws on the Keras model's layers ({layout.KERAS_MODEL_FILE}), which a "
                               f"TFLite file does not keep: give the pushed version's folder as --model instead")
        return on_device.load_tflite(model_dir)
    if explain and not (model_dir / layout.KERAS_MODEL_FILE).is_file():
        raise CommandError(f"--explain needs the Keras model this pipeline pushes beside the SavedModel "
                           f"({layout.KERAS_MODEL_FILE}), and {model_dir} has none; predict without --explain")
    return predict.load_model(model_dir)


def _json_answer(model: str, sheet: str | None, replaced: bool, sheet_error: str | None, predictions: list,
                 left_out: dict, recorded: str | None) -> str:
    from ingest import sources

    shown = lambda path: sources.printable(str(path))  # noqa: E731 - a name not UTF-8 as \xNN, as in the table
    return json.dumps({"model": model, "sheet": sheet, "sheet_replaced": bool(sheet and replaced),
                       "sheet_error": sheet_error, "record_error": recorded,
                       "predictions": [dataclasses.asdict(p) | {"path": shown(p.path)} for p in predictions],
                       "passed_over": list(map(shown, left_out["passed_over"])),
                       "same_file": [list(map(shown, pair)) for pair in left_out["same_file"]]}, indent=2)


def _pipeline_name() -> str:
    """The model's name on a server: the pipeline's (TF Serving's models.config and KServe name it so)."""
    import config as config_lib

    return config_lib.PipelineConfig().name


def _check_record_root(output_dir: pathlib.Path) -> None:
    """Refuses, before anything is classified, a root whose traffic/ (or another of its places) is a symbolic link:
    recording through it would write into the folder it points at."""
    from orchestration.root import run_lock

    linked = run_lock.linked_parts(output_dir.resolve())
    if linked:
        raise run_lock.LinkedPartError(f"{output_dir} cannot be recorded into: {'; '.join(linked)}")


def _record(output_dir: pathlib.Path, model_dir: pathlib.Path, predictions, sent: dict[int, bytes]) -> str | None:
    """Records what the model classified as traffic of the root; prints where. Returns why it could not."""
    from inference import predict
    from orchestration.root import marker

    root = output_dir.resolve()
    marker.inspect(root)  # the served model was found there: a root; a folder of the user's is refused all the same
    if not sent:
        print("recorded nothing as traffic: the model was given no image", file=sys.stderr)
        return None
    writer = predict.record(str(RunLayout(root).traffic_root), predictions, sent, int(model_dir.name))
    if not writer.spans:
        return f"recording the images as traffic failed: {writer.last_error}"
    print(f"recorded {writer.recorded} images as traffic (span {writer.spans[0]} of {RunLayout(root).traffic_root}, "
          f"served version {model_dir.name})", file=sys.stderr)
    return None


def _default_sheet(run_or_model: pathlib.Path) -> pathlib.Path:
    """<output-dir>/predictions/contact_sheet.png, for a run's output dir or a model it pushed
    (<output-dir>/serving_model/<N>)."""
    from contract import layout

    resolved = run_or_model.resolve()
    if resolved.is_file():  # a TFLite file: a version's (<version>/assets.extra/), else one kept elsewhere
        resolved = resolved.parent.parent if resolved.parent.name == layout.ASSETS_EXTRA else pathlib.Path.cwd()
        if not (resolved / "saved_model.pb").exists():
            resolved = pathlib.Path.cwd()
    if (resolved / "saved_model.pb").exists():
        resolved = resolved.parent.parent if resolved.parent.name == "serving_model" else pathlib.Path.cwd()
    return RunLayout(resolved).predictions_dir / layout.CONTACT_SHEET


def command_base_weights(args: argparse.Namespace) -> int:
    """Save a pushed model's MobileNetV2 base as a weights file for --weights.

    Writes the base of a pushed model (MobileNetV2 without its head) as a no-top weights file in the layout of
    Keras' own ImageNet files. Another pipeline then starts from it with --weights FILE and the same --alpha
    (any --image-size): a model trained on your images becomes the pretrained start of the next task, trained
    with the default schedule.
    """
    from config import MOBILENET_V2_BLOCKS
    from contract import layout

    if args.out.suffix != ".h5" or args.out.name.endswith(".weights.h5"):  # Keras 3's own format's name
        raise CommandError(f"--out {errors.shown_name(str(args.out)) or repr('')}: give a file name ending in .h5, not "
                           ".weights.h5 (the layout of Keras' ImageNet weights, which --weights reads)")
    if args.out.is_dir() and not args.out.is_symlink():
        raise CommandError(f"--out {errors.shown_name(str(args.out))} is a folder: give the weights file's path")
    _refuse_inside_a_root(args.out)
    from trainer import model as model_lib

    if args.out.is_file() and not args.out.is_symlink() and not model_lib.written_by_base_weights(str(args.out)):
        raise CommandError(f"--out {errors.shown_name(str(args.out))} is a file base-weights did not write (an "
                           "ImageNet file, a file of yours): it is left as it is; give another path")
    from inference import on_device

    if args.model and on_device.is_tflite(args.model):
        raise CommandError(f"--model {errors.shown_name(str(args.model))} is a TFLite file, which keeps no Keras "
                           f"layers to save: give the pushed version's folder")
    model_dir = _model_dir(args)
    keras_file = model_dir / layout.KERAS_MODEL_FILE
    if not keras_file.is_file():
        raise CommandError(f"{model_dir} has no {layout.KERAS_MODEL_FILE}: not a model version this pipeline pushed")
    import keras

    classifier = keras.models.load_model(keras_file, compile=False)
    replaced = _write_whole(args.out, lambda path: model_lib.save_base_weights(classifier, path))
    alpha = _trained_setting(model_dir, "alpha")
    blocks = _trained_setting(model_dir, "base_blocks")
    # A base kept to fewer blocks holds only their layers: a model that starts from it keeps as many, or fewer, and
    # fine-tunes from a layer inside it (the default, 100, is past most such bases).
    depth = (f" --base-blocks {blocks} --fine-tune-from {_trained_setting(model_dir, 'fine_tune_from')}"
             if blocks is not None and blocks < MOBILENET_V2_BLOCKS else "")
    print(f"wrote the MobileNetV2 base of {model_dir} to {args.out}{replaced}; start from it with --weights {args.out} "
          + (f"--alpha {alpha}{depth} (the model's; any --image-size)" if alpha is not None
             else "and the --alpha and --base-blocks that model was trained with"))
    return errors.OK


def _refuse_inside_a_root(path: pathlib.Path) -> None:
    """CommandError where `path` lies inside a pushed version (its commit record would no longer match its files:
    the version is then damaged, never served) or inside a root's folders the pipeline keeps."""
    from contract import layout
    from orchestration.root import marker

    folder = path.absolute().parent.resolve()
    for above in (folder, *folder.parents):
        kept = above.name in marker.ROOT_FOLDERS and (above.parent / layout.ROOT_MARKER).is_file()
        if (above / layout.DIGESTS_FILE).is_file() or kept:
            what = (f"the pushed version {above}" if (above / layout.DIGESTS_FILE).is_file()
                    else f"{above}, which the pipeline keeps")
            raise CommandError(f"--out {errors.shown_name(str(path))} is inside {errors.shown_name(what)}: a file "
                               "added there would damage it; write the weights file elsewhere")


def _write_whole(path: pathlib.Path, write) -> str:
    """`write(a temporary path)` beside `path`, then renamed onto it: a reader never finds half a file, a failed
    or killed write leaves what was there, and a link at `path` is replaced, never written through. Returns what
    the output line says of what was there before; CommandError in one line naming the file if it cannot be
    written."""
    import os
    import re

    from contract import whole_files

    shown = errors.shown_name(str(path))
    before = (" (replacing the link that was there; the file it led to is untouched)" if path.is_symlink() else
              " (replacing the earlier file)" if path.exists() else "")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        whole_files.replace_whole(path, write, ".base-weights-")
    except (OSError, ValueError, RuntimeError) as error:  # h5py reports a file it cannot write as any of these
        # HDF5 words a failed system call as "... errno = 28, error message = ..." inside its own text
        code = re.search(r"errno = (\d+)", str(error))
        why = (f"{errors.shown_name(str(path.parent))} is a file, not a folder" if isinstance(error, FileExistsError)
               else os.strerror(int(code.group(1))) if code
               else getattr(error, "strerror", None) or errors.first_line(error))
        raise RunFailedError(f"--out {shown} cannot be written: {why}") from None
    return before


def _trained_setting(model_dir: pathlib.Path, name: str):
    """A number the version's model was trained with, from its training history; None where it does not say."""
    from contract import layout

    try:
        value = json.loads((model_dir / layout.TRAINING_HISTORY_FILE).read_text())["settings"][name]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


COMMANDS = (
    flags.Command.of("predict", _predict_flags, command_predict),
    flags.Command.of("base-weights", _base_weights_flags, command_base_weights),
)
