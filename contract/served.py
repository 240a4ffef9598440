"""Which version is served: the one TF Serving's model config in the serving folder names.

TF Serving, asked for the highest numbered folder, loads whatever folder has
the highest number, a push cut short before its commit record included. So the
pusher names the version in `<serving folder>/models.config` (CONFIG_FILE), a
text `tensorflow.serving.ModelServerConfig` whose version policy is `specific`,
written whole after the version's commit record; the server is started with
`--model_config_file` and re-reads it (`--model_config_file_poll_wait_seconds`).
A server, running or fresh, loads only the version the file names.

Every reader of the project (`models`, `rollback`, the baseline, `predict`)
takes the served version from here: the version the config names, when its
folder is complete and its files match the digests recorded at its push. A
root an earlier release wrote has no config file: there the highest complete
version counts, as TF Serving's default policy would have served it, until the
next push or rollback writes the file.

A version folder is complete when its commit record (storage's publishing)
names a SavedModel and every file it names is there; `models`, `predict` and
the pusher name what else a serving folder holds, which every reader ignores.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import posixpath

from contract import layout, storage
from contract.errors import CommandError, first_line

CONFIG_FILE = layout.SERVING_CONFIG_FILE
MODEL_NAME = "cats-vs-dogs"  # the model's name in a server's URLs: the InferenceService's name by default
MODEL_PLATFORM = "tensorflow"


class ConfigError(CommandError, ValueError):
    """The serving config cannot be read as a one-model ModelServerConfig; the message names the file."""


@dataclasses.dataclass(frozen=True)
class ServingConfig:
    name: str
    base_path: str  # the serving folder as the server sees it (KServe: /mnt/models)
    version: int


def base_path_of(serving_dir: str) -> str:
    """Where a server sees `serving_dir`, unless told: KServe copies an object store's folder to /mnt/models in
    its pod (nothing else serves from one here); a server on a file system reads the folder where it is."""
    return layout.KSERVE_MODEL_MOUNT if "://" in str(serving_dir) else str(serving_dir)


def config_path(serving_dir: str) -> str:
    return posixpath.join(str(serving_dir), CONFIG_FILE)


def config_text(config: ServingConfig) -> str:
    """The ModelServerConfig that serves exactly `config.version`, in protobuf text format."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    message = model_server_config_pb2.ModelServerConfig()
    model = message.model_config_list.config.add(name=config.name, base_path=config.base_path,
                                                 model_platform=MODEL_PLATFORM)
    model.model_version_policy.specific.versions.append(config.version)
    return text_format.MessageToString(message)


def parse_config(text: str, where: str) -> ServingConfig:
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    message = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        raise ConfigError(f"{where}: not a ModelServerConfig ({error})") from None
    models = message.model_config_list.config
    if len(models) != 1 or len(models[0].model_version_policy.specific.versions) != 1:
        raise ConfigError(f"{where}: expected one model with one specific version")
    model = models[0]
    version = model.model_version_policy.specific.versions[0]
    if version < 1:
        raise ConfigError(f"{where}: names version {version}, and versions are numbered from 1")
    return ServingConfig(model.name, model.base_path, version)


def read_config(serving_dir: str) -> ServingConfig | None:
    """The serving folder's config; None where it has none (a root an earlier release wrote)."""
    path = config_path(serving_dir)
    if storage.is_local(path) and os.path.islink(path):
        raise ConfigError(f"{path} is a symbolic link, never followed")
    if not storage.backend.exists(path):
        return None
    try:
        text = storage.backend.read(path).decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not text") from None
    except storage.NotAFileError as error:
        raise ConfigError(str(error)) from None
    except (OSError, _tf_errors().OpError) as error:
        raise ConfigError(f"cannot read {path} ({first_line(error)})") from None
    return parse_config(text, path)


def _tf_errors():
    import tensorflow as tf

    return tf.errors


def write_config(serving_dir: str, config: ServingConfig) -> None:
    """Whole or not at all (storage.backend.write): a polling server never reads half a file."""
    storage.backend.write(config_path(serving_dir), config_text(config).encode())


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with storage.backend.open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def odd_version_folders(serving_dir: str) -> list[str]:
    """One line for each folder of `serving_dir` that is not a version (its name is not ASCII digits), nor hidden
    (a staging copy), nor a link (refused_entries names those): ignored, as TF Serving ignores it."""
    if not storage.backend.isdir(serving_dir):
        return []
    return [f"{posixpath.join(serving_dir, name)} is not a version (a version's name is a number in ASCII digits, "
            "at most 2**62): ignored"
            for name in sorted(storage.backend.listdir(serving_dir))
            if layout.version_number(name) is None and not name.startswith(".")
            and storage.backend.isdir(posixpath.join(serving_dir, name))
            and not _is_link(posixpath.join(serving_dir, name))]


def _is_link(path: str) -> bool:
    return storage.is_local(path) and os.path.islink(path)


def serving_dir_warnings(serving_dir: str) -> list[str]:
    """What a reader of `serving_dir` ignores there, one line each: links (the next push or rollback moves them
    aside) and folders that are not versions. The serving config is not among them: a link there is the
    config's own error (read_config), and the next writer rewrites it in place."""
    return [f"{path} is refused: {problem}; the next push or rollback moves it aside"
            for path, problem in storage.refused_entries(serving_dir, _not_the_config).items()] + \
        odd_version_folders(serving_dir)


def _not_the_config(name: str) -> bool:
    return name != layout.SERVING_CONFIG_FILE


def recorded_digests(version_dir: str) -> dict[str, str] | None:
    """{file: SHA-256} from the version's commit record, None if it has no readable one."""
    path = posixpath.join(version_dir, layout.DIGESTS_FILE)
    if not storage.backend.exists(path):
        return None
    try:
        text = storage.backend.read(path)
    except (OSError, _tf_errors().OpError):
        return None
    recorded = {}
    for line in text.decode("utf-8", "replace").splitlines():
        digest, separator, name = line.partition("  ")
        if not separator or len(digest) != 64:
            return None
        recorded[name] = digest
    return recorded


def version_incomplete_reason(version_dir: str) -> str | None:
    """Why a version folder is not a complete push (None: it is). The commit record is layout.DIGESTS_FILE,
    written after every other file is in place; a version is complete when it is there, readable, names a
    SavedModel and every file it names is present, and it is not, and holds no, symbolic link. Checks names
    only: digest_problems reads the bytes."""
    linked = storage.link_problem(version_dir)
    if linked:
        return linked
    recorded = recorded_digests(version_dir)
    if recorded is None:
        return f"no readable commit record ({layout.DIGESTS_FILE})"
    if "saved_model.pb" not in recorded:
        return f"its commit record ({layout.DIGESTS_FILE}) names no saved_model.pb"
    missing = sorted(set(recorded) - set(storage.backend.files(version_dir)))
    if missing:
        return f"{len(missing)} of the files its commit record names are missing ({', '.join(missing[:3])})"
    return None


def digest_problems(version_dir: str) -> list[str]:
    """How the files of a pushed version differ from the digests recorded at its push ([] if they do not).
    Reads every byte: a model's size in I/O."""
    recorded = recorded_digests(version_dir)
    if recorded is None:
        return [f"no {layout.DIGESTS_FILE}: its files cannot be checked"]
    present = set(storage.backend.files(version_dir)) - {layout.DIGESTS_FILE}
    problems = [f"{name}: missing" for name in sorted(set(recorded) - present)]
    problems += [f"{name}: not in the version when it was pushed" for name in sorted(present - set(recorded))]
    for name in sorted(present & set(recorded)):
        problem = _changed(posixpath.join(version_dir, name), recorded[name])
        if problem:
            problems.append(f"{name}: {problem}")
    return problems


def _changed(path: str, recorded: str) -> str | None:
    try:
        actual = sha256(path)
    except storage.NotAFileError as error:
        return f"{error.kind}, not a file: never read"
    except (OSError, _tf_errors().OpError) as error:
        return f"cannot be read ({first_line(error)})"
    return "changed since the push" if actual != recorded else None


def damage(version_dir: str, check_bytes: bool = True) -> str | None:
    """Why a version folder cannot be served as pushed (None: it can): incomplete, or (with `check_bytes`) its
    files differ from their digests."""
    why = version_incomplete_reason(version_dir)
    if why:
        return f"not a complete version: {why}"
    problems = digest_problems(version_dir) if check_bytes else []
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        return f"its files differ from those pushed ({'; '.join(problems[:3])}{more})"
    return None


def complete_versions(serving_dir: str) -> list[int]:
    """The numbered folders with a valid commit record whose files are all present, oldest first."""
    if not storage.backend.isdir(serving_dir):
        return []
    numbered = sorted(n for name in storage.backend.listdir(serving_dir)
                      if (n := layout.version_number(name)) is not None)
    return [v for v in numbered if not version_incomplete_reason(posixpath.join(serving_dir, str(v)))]


@dataclasses.dataclass(frozen=True)
class Served:
    version: int | None  # what a server loads; None: nothing it can load as pushed
    named: int | None  # the version the config names (without a config: the highest complete one)
    damage: str | None = None  # why `named` cannot be served as pushed
    config_error: str | None = None  # the config cannot be read
    configured: bool = True  # False: no config file yet (a root an earlier release wrote)

    def problem(self) -> str | None:
        """One line: why nothing is served though something was pushed; None when that is not the case."""
        if self.config_error:
            return f"{self.config_error}; the next push or rollback rewrites it"
        if self.damage:
            source = f"named in {CONFIG_FILE}" if self.configured else f"the newest; no {CONFIG_FILE} yet"
            return f"version {self.named} ({source}) is damaged: {self.damage}"
        return None


def served(serving_dir: str) -> Served:
    """The version a server of `serving_dir` loads; hashes that version's files (one model's I/O)."""
    serving_dir = str(serving_dir)
    try:
        config = read_config(serving_dir)
    except (ConfigError, OSError) as error:
        return Served(None, None, config_error=str(error))
    named = config.version if config else max(complete_versions(serving_dir), default=None)
    if named is None:
        return Served(None, None, configured=config is not None)
    why = damage(posixpath.join(serving_dir, str(named)))
    return Served(None if why else named, named, damage=why, configured=config is not None)
