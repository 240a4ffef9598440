"""One error model (contract.errors): every exception class of the project is a CommandError, or one of the few
internal signals listed here with where it is caught; exit codes are chosen in contract/errors.py alone; only the
command line prints (library code hands its lines to a `say` or logs)."""

import ast
import importlib
import inspect
import os

import pytest

from contract import errors
from tests.helpers import ROOT, project_packages

# Exceptions that never reach a command's end: each is caught where it is raised, by code that words it (or acts
# on it). A new class belongs here only with such a reason; anything else derives from CommandError.
INTERNAL = {
    # An OSError on purpose: every reader already handles OSError, and contract.errors.storage_fault words one.
    "contract.storage.NotAFileError",
    # Another writer published under that name first: the writer takes the next number.
    "contract.storage.AlreadyExistsError",
    # One file's rejection: the ingest report lists it with its reason, and the ingest goes on.
    "ingest.images.RejectedImage",
    "ingest.sources.RefusedFile",
    "ingest.sources.FileTooLarge",
    "ingest.sources.NotRegularFile",
    # One event's refusal: the sink answers it with an HTTP status and counts it.
    "traffic.reasons.Refused",
    # One trial's failure: KerasTuner records it and the search goes on (components.tuner.SearchFailed ends it).
    "trainer.tuning.TrialFailed",
    # What TF Serving would make of a version: inference.tf_serving.problem turns it into its reason, which
    # `rollback` says in its RollbackError's line.
    "inference.tf_serving.UnservableError",
    # A node TFX recorded FAILED without raising: the Kubeflow task records it and ends in one line, as for any
    # error of the node's own (orchestration.engines.kfp_tasks._node_failed).
    "orchestration.engines.tfx_node.NodeFailedError",
    # A weights file no base of the configured blocks loads: the command line words it as its SettingsError before
    # any work, the Trainer as its WeightsUnavailableError.
    "trainer.weights_files.WeightsFileError",
}

# Where a print is the point. Everywhere else library code hands its lines to its caller's `say`, or logs.
PRINTS = {
    "pipeline_runner.py",  # the entry point
    "container/check_imports.py",  # a script of the image's build
    # `end`: the one place an error's line is shown, for the command line and the Kubeflow tasks alike
    "contract/errors.py",
    "orchestration/engines/kfp_components.py",  # each body is its Kubeflow task's command line
    "orchestration/engines/warm_zygote.py",  # the warm process's own entry point: its one line, into its log
}
PRINTING_PACKAGES = {"cli"}  # benchmarks/ and tests/ are no shipped package


def _shipped_files():
    for name in sorted(project_packages()):
        if name == "pipeline_runner":
            yield ROOT / "pipeline_runner.py"
        else:
            yield from sorted((ROOT / name).rglob("*.py"))


def _module(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _exception_classes():
    """(qualified name, class) of every exception class the shipped modules define at their top level."""
    found = []
    for path in _shipped_files():
        module = importlib.import_module(_module(path))
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == module.__name__:
                found.append((f"{cls.__module__}.{cls.__qualname__}", cls))
    return found


def test_every_exception_class_of_the_project_is_a_command_error_or_a_listed_internal_one():
    classes = dict(_exception_classes())
    assert len(classes) > 30, sorted(classes)  # the walk found the project's classes
    wrong = sorted(name for name, cls in classes.items() if not issubclass(cls, errors.CommandError)
                   and name not in INTERNAL)
    assert not wrong, f"derive these from contract.errors.CommandError (or list them, with why): {wrong}"
    assert not INTERNAL - set(classes), f"listed as internal, but gone: {sorted(INTERNAL - set(classes))}"
    assert not {name for name in INTERNAL if issubclass(classes[name], errors.CommandError)}


def test_the_refusals_named_once_as_exceptions_of_their_own_end_in_one_line_with_their_exit_code():
    from components.anomalies_gate import DataAnomaliesError
    from ingest.spans import NoUsableImagesError
    from orchestration.engines.tfx_node import NodeTaskError
    from orchestration.serving.kserve import RolloutError
    from orchestration.serving.rollback import RollbackError

    assert RollbackError(4, "version 4 holds a model that was not blessed").line() == (
        "cannot roll back to version 4: version 4 holds a model that was not blessed; nothing was changed")
    assert RolloutError("clients do not see version 5: no rights", done="the rollback is pushed and recorded"
                        ).line() == "the rollback is pushed and recorded, but clients do not see version 5: no rights"
    assert RolloutError("no rights").line() == "no rights"
    codes = {cls: cls("x").exit_code for cls in (NoUsableImagesError, NodeTaskError, RolloutError,
                                                   DataAnomaliesError)}
    assert codes == {NoUsableImagesError: errors.REFUSED, NodeTaskError: errors.REFUSED,
                     RolloutError: errors.FAILED, DataAnomaliesError: errors.FAILED}


def _calls(tree, name):
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and (getattr(node.func, "id", None) == name or getattr(node.func, "attr", None) == name)]


def test_exit_codes_are_chosen_in_contract_errors_alone():
    chosen = []
    for path in _shipped_files():
        where = str(path.relative_to(ROOT))
        if where == "contract/errors.py":
            continue
        tree = ast.parse(path.read_text(), where)
        for node in ast.walk(tree):
            targets = (node.targets if isinstance(node, ast.Assign) else [node.target]
                       if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
            chosen += [f"{where}:{node.lineno}" for target in targets
                       if getattr(target, "attr", getattr(target, "id", None)) == "exit_code"]
        for call in _calls(tree, "exit") + _calls(tree, "SystemExit"):
            chosen += [f"{where}:{call.lineno}" for arg in call.args
                       if isinstance(arg, ast.Constant) and isinstance(arg.value, int)]
    assert not chosen, f"an exit code chosen outside contract/errors.py: {chosen}"


def test_only_the_command_line_prints():
    printing = []
    for path in _shipped_files():
        where = str(path.relative_to(ROOT))
        if where.split("/")[0] in PRINTING_PACKAGES or where in PRINTS:
            continue
        tree = ast.parse(path.read_text(), where)
        # A call, or print handed on as a function (`say=print`): either way, this module prints.
        printing += [f"{where}:{node.lineno}" for node in ast.walk(tree)
                     if isinstance(node, ast.Name) and node.id == "print"]
    assert not printing, f"library code prints; hand the line to the caller's `say`, or log it: {printing}"
    unused = {where for where in PRINTS if "print" not in {node.id for node in ast.walk(ast.parse(
        (ROOT / where).read_text())) if isinstance(node, ast.Name)}}
    assert not unused, f"allowed to print, but prints nothing: {sorted(unused)}"



def test_the_first_line_of_a_tensorflow_error_is_its_message_without_the_ops_plumbing():
    import tensorflow as tf

    try:
        tf.io.decode_jpeg(b"\xff\xd8\xff\xe0 not the rest of a JPEG", channels=3)
    except tf.errors.InvalidArgumentError as error:
        raw, line = str(error), errors.first_line(error)
    assert "{{function_node" in raw and "[Op:DecodeJpeg]" in raw  # what TensorFlow says, as the test expects it
    assert line and "{{" not in line and "[Op:" not in line and line in raw, line
    # another error's text that looks alike is its own: kept as it is
    looks_alike = "got {{function_node a}} [Op:b] name: c"
    assert errors.first_line(ValueError(looks_alike)) == looks_alike
    assert errors.first_line(OSError(2, "No such file", "/x/{{function_node a}}")).endswith("'/x/{{function_node a}}'")
    assert errors.first_line(OSError("a plain message\nand a hint")) == "a plain message"


def test_a_failed_graph_ops_line_is_its_message_not_tensorflows_header_or_the_ops_stack():
    import tensorflow as tf

    @tf.function
    def decode(data):
        return tf.io.decode_jpeg(data)

    with pytest.raises(tf.errors.InvalidArgumentError) as failed:
        decode(tf.constant(b"not an image"))
    raw = str(failed.value)
    assert raw.startswith("Graph execution error:") and "Detected at node" in raw and 'File "' in raw
    line = errors.first_line(failed.value)
    assert line == "Unknown image file format. One of JPEG, PNG, GIF, BMP required.", raw
    # a session's run says it without the stack
    graph = tf.Graph()
    with graph.as_default():
        bytes_in = tf.compat.v1.placeholder(tf.string, [])
        decoded = tf.io.decode_jpeg(bytes_in)
    with tf.compat.v1.Session(graph=graph) as session, pytest.raises(tf.errors.InvalidArgumentError) as failed:
        session.run(decoded, {bytes_in: b"not an image"})
    assert errors.first_line(failed.value, with_type=True) == \
        "InvalidArgumentError: Unknown image file format. One of JPEG, PNG, GIF, BMP required."


def test_the_error_line_comes_after_what_stdout_held(tmp_path, monkeypatch):
    """`command 2>&1 > log`: one file for both, stdout buffered as a redirection is, stderr written at once."""
    log = tmp_path / "log"
    with open(log, "w") as stdout, open(log, "a", buffering=1) as stderr:
        monkeypatch.setattr("sys.stdout", stdout)
        monkeypatch.setattr("sys.stderr", stderr)
        print("the table the error speaks of")
        assert errors.end(errors.CommandError("no usable images")) == errors.REFUSED
    assert log.read_text().splitlines() == ["the table the error speaks of", "error: no usable images"]


def test_the_error_line_is_printed_whatever_state_stdout_is_in(monkeypatch, capsys):
    closed = open(os.devnull, "w")
    closed.close()
    for stdout in (closed, None, object()):  # closed by an embedding program, none, no stream at all
        monkeypatch.setattr("sys.stdout", stdout)
        assert errors.end(errors.CommandError("refused")) == errors.REFUSED
        monkeypatch.undo()
        assert capsys.readouterr().err == "error: refused\n"


def test_a_copy_of_a_folder_that_failed_for_some_files_is_one_line_naming_the_first(tmp_path):
    """shutil.copytree gathers each file's fault into one error whose text is a list of (source, target, why): the
    line a command ends with names the first fault and counts the rest."""
    import shutil

    (tmp_path / "report").mkdir()
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / "report" / name).symlink_to(tmp_path / "gone" / name)  # copying a dangling link's target fails
    with pytest.raises(shutil.Error) as failed:
        shutil.copytree(tmp_path / "report", tmp_path / "copy")
    line = errors.first_line(failed.value)
    assert line.startswith("[Errno 2] No such file or directory: ") and line.endswith(" (and 2 more files)"), line
    assert "\n" not in line and "[(" not in line
    assert errors.first_line(failed.value, with_type=True) == f"Error: {line}"
    assert errors.storage_fault(failed.value).args[0].startswith("a storage fault stopped it: Error: [Errno 2] ")
