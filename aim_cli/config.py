"""model_repos.yaml: find, load, validate, save.

The file is edited by hand and reviewed in git, so saving keeps its comments and key order
(ruamel.yaml round trip) and replaces it atomically (temp file + rename).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from aim_cli.errors import ConfigError, ConflictError, NotFoundError, UsageError
from aim_cli.names import check_name
from aim_cli.util.quoting import has_control, printable, quoted

CONFIG_NAME = "model_repos.yaml"
REPO_TYPES = ("local", "s3")
# Keys each repository type accepts; anything else is a typo we refuse rather than ignore.
ALLOWED_KEYS = {
    "local": {"type", "path"},
    "s3": {"type", "path", "region", "endpoint_url", "profile", "addressing_style"},
}
ADDRESSING_STYLES = ("auto", "virtual", "path")


@dataclass(frozen=True)
class RepoConfig:
    name: str
    type: str
    path: str  # absolute directory for local; s3://bucket/prefix for s3
    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    addressing_style: str | None = None

    @property
    def bucket(self) -> str:
        return parse_s3_url(self.path)[0]

    @property
    def prefix(self) -> str:
        return parse_s3_url(self.path)[1]


# S3's rules for bucket names (general purpose buckets): 3-63 characters of a-z 0-9 . -, starting
# and ending with a letter or digit, no "..", not shaped like an IP address.
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", re.ASCII)
_IP_RE = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+", re.ASCII)
_S3_HINT = (
    "write it as s3://BUCKET/PREFIX (a bucket name of 3-63 characters a-z 0-9 . -, and a prefix "
    "with no empty, '.' or '..' segments)"
)


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ("bucket", "some/prefix"); ConfigError for anything else.

    One trailing slash is dropped (``s3://b/vision/`` is ``s3://b/vision``). Empty, ``.`` and
    ``..`` segments are refused, not normalised: a server or proxy may normalise them, or not,
    so two spellings could reach one store, or one spelling two stores."""
    if not url.startswith("s3://"):
        raise ConfigError(f"S3 path {quoted(url)} does not start with s3://", _S3_HINT)
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise ConfigError(f"S3 path {quoted(url)} names no bucket", _S3_HINT)
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket or _IP_RE.fullmatch(bucket):
        raise ConfigError(f"S3 path {quoted(url)}: {quoted(bucket)} is not a valid bucket name", _S3_HINT)
    if not prefix:
        return bucket, ""
    segments = prefix.split("/")
    if segments[-1] == "":
        segments.pop()  # the trailing slash
    if any(part in ("", ".", "..") for part in segments):
        raise ConfigError(f"S3 path {quoted(url)} has an empty, '.' or '..' segment", _S3_HINT)
    prefix = "/".join(segments)
    return bucket, prefix


@dataclass
class Config:
    path: Path  # the model_repos.yaml this came from (may not exist yet)
    repos: dict[str, RepoConfig] = field(default_factory=dict)

    def repo(self, name: str) -> RepoConfig:
        check_name("repository", name)
        try:
            return self.repos[name]
        except KeyError:
            known = ", ".join(sorted(self.repos)) or "none"
            raise NotFoundError(
                f"unknown repository {quoted(name)} in {self.path} (known: {known})",
                "run `aim_cli repo list`, or add it with `aim_cli repo create`",
            ) from None


def find_config_path(explicit: str | os.PathLike | None = None, cwd: Path | None = None) -> Path | None:
    """--config, else $AIM_CONFIG, else the first model_repos.yaml in cwd or its parents."""
    if explicit:
        return Path(explicit).absolute()
    env = os.environ.get("AIM_CONFIG")
    if env:
        return Path(env).absolute()
    here = (cwd or Path.cwd()).absolute()
    for d in (here, *here.parents):
        candidate = d / CONFIG_NAME
        if candidate.is_file():
            return candidate
    return None


def _check_value(where: str, key: object, value: object) -> None:
    """Every value is a non-empty string that prints as one line and writes back as UTF-8."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {quoted(str(key))} must be a non-empty string", "fix the file")
    if has_control(value):
        raise ConfigError(
            f"{where}: {quoted(str(key))} holds a control character: {quoted(value)}",
            "remove it (a tab or newline has no place in a setting)",
        )
    if not _is_utf8(value):
        raise ConfigError(
            f"{where}: {quoted(str(key))} is not valid UTF-8: {quoted(value)}",
            "use a path or value whose name is valid UTF-8",
        )


def parse_entry(cfg_path: Path, name: str, entry: object, *, where: str | None = None) -> RepoConfig:
    """One repository's settings, checked. ``where`` starts each message (default: the file and
    the repository's name); ``repo create`` names the command line instead."""
    where = where or f"{cfg_path}: repository {quoted(name)}"
    try:
        check_name("repository", name)
    except UsageError as e:
        raise ConfigError(f"{where}: {e.message}", e.hint) from None
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a mapping with at least 'type' and 'path'", "see the README")
    rtype = entry.get("type")
    if rtype not in REPO_TYPES:
        shown = quoted(rtype) if isinstance(rtype, str) else repr(rtype)
        raise ConfigError(f"{where}: 'type' must be one of {', '.join(REPO_TYPES)}, not {shown}", "fix the file")
    unknown = set(entry) - ALLOWED_KEYS[rtype]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {_listed(unknown)}",
            f"{rtype} repositories accept {', '.join(sorted(ALLOWED_KEYS[rtype]))}",
        )
    for key, value in entry.items():
        _check_value(where, key, value)
    path = entry.get("path")
    if not path:
        raise ConfigError(f"{where} has no 'path'", "add the directory or s3://bucket/prefix")
    if rtype == "local":
        p = Path(os.path.expanduser(path))
        if not p.is_absolute():
            p = cfg_path.parent / p
        path = str(Path(os.path.normpath(p)))
        _check_value(where, "path", path)  # the home or config directory may add what the file lacks
    else:
        try:
            parse_s3_url(path)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e.message}", e.hint) from None
        style = entry.get("addressing_style")
        if style is not None and style not in ADDRESSING_STYLES:
            raise ConfigError(
                f"{where}: addressing_style must be one of {', '.join(ADDRESSING_STYLES)}", "fix the file"
            )
    return RepoConfig(
        name=name,
        type=rtype,
        path=path,
        region=entry.get("region"),
        endpoint_url=entry.get("endpoint_url"),
        profile=entry.get("profile"),
        addressing_style=entry.get("addressing_style"),
    )


# -- reading the file ---------------------------------------------------------------------------------
# model_repos.yaml arrives through git, so it is hostile input: every command reads it, and a
# 425-byte alias bomb once hung them all. The file is read from YAML *events* (the parser is a
# state machine, not a recursion) into plain dicts and strings, refusing on the way everything the
# format never needs: aliases and anchors (the bomb), tags (``!!python/...``), merge keys (``<<``),
# keys that are not strings, nesting deeper than MAX_DEPTH, more than MAX_NODES keys and values,
# more than one document. Nothing of
# unbounded size is ever expanded or repr()-ed whole into a message.
MAX_CONFIG_BYTES = 1024 * 1024  # a config of a thousand repositories is ~100 KiB
MAX_DEPTH = 8  # the format needs 3 (file -> repos -> entry); a list as a value makes 4
MAX_NODES = 100_000  # keys and values: ~10,000 repositories; reading them stays well under a second
_FORMAT_HINT = "model_repos.yaml holds plain mappings of strings only (see the README)"
_TOO_BIG_HINT = "a model_repos.yaml holds only repository entries; check that it is the right file"


def _is_utf8(text: str) -> bool:
    """False for a str holding lone surrogates (a non-UTF-8 name as Python decodes it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _listed(keys) -> str:
    """Some keys of a mapping, each quoted: a message stays short however many there are."""
    shown = [quoted(k) for k in sorted(map(str, keys))[:5]]
    more = len(keys) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


@dataclass(frozen=True)
class NotAString:
    """A scalar the YAML rules read as something else (a number, a boolean, a date), kept as
    written: no setting of the format is one, and constructing it could fail (an int of a
    million digits)."""

    text: str

    def __repr__(self) -> str:
        return quoted(self.text)


@dataclass
class _Open:
    """A mapping or list being read; ``key`` is the mapping's key awaiting its value."""

    value: dict | list
    key: str | None = None


_STR_TAG, _NULL_TAG, _MERGE_TAG = (f"tag:yaml.org,2002:{t}" for t in ("str", "null", "merge"))


class _TreeBuilder:
    """Plain values (dicts, lists, str, None, NotAString) built from YAML events, one event at
    a time, refusing what the format never needs (see above) before it is built."""

    def __init__(self, cfg_path: Path):
        import yaml

        self.yaml = yaml
        self.cfg_path = cfg_path
        self.resolver = yaml.resolver.Resolver()  # the YAML 1.1 rules that make `2024` a number
        self.stack: list[_Open] = []
        self.root: object = None
        self.documents = 0
        self.nodes = 0

    def refused(self, what: str, mark, hint: str = _FORMAT_HINT) -> ConfigError:
        at = f" at line {mark.line + 1}" if mark is not None else ""
        return ConfigError(f"{self.cfg_path}: {what}{at}", hint)

    def feed(self, event) -> None:
        yaml = self.yaml
        if isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                raise self.refused("a second YAML document (---) is not allowed", event.start_mark)
        elif isinstance(event, yaml.AliasEvent):
            raise self.refused("aliases (*name) are not allowed", event.start_mark, "write each value out in full")
        elif isinstance(event, yaml.CollectionEndEvent):
            self.add(self.stack.pop().value)
        elif isinstance(event, yaml.NodeEvent):
            self.nodes += 1
            if self.nodes > MAX_NODES:
                raise self.refused(f"more than {MAX_NODES} keys and values", event.start_mark, _TOO_BIG_HINT)
            if event.anchor is not None:
                raise self.refused("anchors (&name) are not allowed", event.start_mark, "write each value out in full")
            if event.tag is not None:
                raise self.refused(f"tags are not allowed ({quoted(event.tag, 60)})", event.start_mark)
            if isinstance(event, yaml.ScalarEvent):
                self.scalar(event)
            else:
                self.start_collection(event)
        # Stream start and end, document end: nothing to build.

    def expecting_key(self) -> bool:
        return bool(self.stack) and isinstance(self.stack[-1].value, dict) and self.stack[-1].key is None

    def add(self, value: object) -> None:
        if not self.stack:
            self.root = value
        elif isinstance(self.stack[-1].value, list):
            self.stack[-1].value.append(value)
        else:
            self.stack[-1].value[self.stack[-1].key] = value
            self.stack[-1].key = None

    def scalar(self, event) -> None:
        tag = self.resolver.resolve(self.yaml.ScalarNode, event.value, event.implicit)
        if not self.expecting_key():
            self.add(event.value if tag == _STR_TAG else None if tag == _NULL_TAG else NotAString(event.value))
            return
        if tag == _MERGE_TAG:
            raise self.refused("merge keys (<<) are not allowed", event.start_mark, "write each entry out in full")
        if tag != _STR_TAG:
            raise self.refused(
                f"the key {quoted(event.value)} is not a string",
                event.start_mark,
                f"quote it: {quoted(event.value, 60)}",
            )
        if event.value in self.stack[-1].value:
            raise self.refused(
                f"duplicate key {quoted(event.value)}", event.start_mark, "each repository may be named only once"
            )
        self.stack[-1].key = event.value

    def start_collection(self, event) -> None:
        if self.expecting_key():
            raise self.refused("a key must be a name, not a list or mapping", event.start_mark)
        if len(self.stack) >= MAX_DEPTH:
            raise self.refused(f"nesting deeper than {MAX_DEPTH} levels is not allowed", event.start_mark)
        self.stack.append(_Open({} if isinstance(event, self.yaml.MappingStartEvent) else []))


def _read_yaml(cfg_path: Path, text: str) -> object:
    """The document of ``text`` as plain values (see _TreeBuilder); YAMLError for bad syntax."""
    import yaml

    builder = _TreeBuilder(cfg_path)
    # libyaml's parser when present (10x faster); both parse lazily, so a refusal stops the read.
    for event in yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        builder.feed(event)
    return builder.root


def _decode(cfg_path: Path, data: bytes | str) -> str:
    """The file's text: at most MAX_CONFIG_BYTES of UTF-8 (a leading BOM is dropped)."""
    if isinstance(data, str):
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ConfigError(
                f"{cfg_path} is not valid UTF-8 (character {e.start + 1})", "save the file as UTF-8"
            ) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{cfg_path} is larger than {MAX_CONFIG_BYTES // 1024} KiB", _TOO_BIG_HINT)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{cfg_path} is not valid UTF-8 at line {line}", "save the file as UTF-8") from None


def parse_config(cfg_path: Path, data: str | bytes) -> Config:
    """Parse a model_repos.yaml's content (bytes as read, or text): Config, or ConfigError."""
    import yaml

    text = _decode(cfg_path, data)
    try:
        parsed = _read_yaml(cfg_path, text)
    except yaml.YAMLError as e:
        # The context mark (where an unclosed quote or bracket opened) is where the fix goes;
        # the problem mark may point past the end of the file.
        mark = getattr(e, "context_mark", None) or getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or getattr(e, "reason", None)  # ReaderError: a reason
        what = f" ({printable(problem, 120)})" if problem else ""
        raise ConfigError(f"{cfg_path} is not valid YAML{at}{what}", "fix the syntax (see the README)") from None
    if parsed is None:
        parsed = {"repos": {}}
    if not isinstance(parsed, dict):
        raise ConfigError(f"{cfg_path} must be a mapping with the single key 'repos'", "see the README")
    unknown = set(parsed) - {"repos"}
    if unknown:
        raise ConfigError(
            f"{cfg_path}: unknown top-level key(s) {_listed(unknown)}", "the file holds only 'repos:'; see the README"
        )
    repos = parsed.get("repos") or {}
    if not isinstance(repos, dict):
        raise ConfigError(f"{cfg_path}: 'repos' must be a mapping of name to settings", "see the README")
    return Config(cfg_path, {n: parse_entry(cfg_path, n, e) for n, e in repos.items()})


def _checked_path(path: Path) -> Path:
    """A config path that prints and resolves local paths as UTF-8, or ConfigError."""
    if not _is_utf8(str(path)):
        raise ConfigError(
            f"the config path {quoted(str(path))} is not valid UTF-8",
            "rename the directory or file, or pass --config with a UTF-8 path",
        )
    return path


def _read_bytes(path: Path) -> bytes | None:
    """At most MAX_CONFIG_BYTES + 1 bytes of the file (enough to refuse a larger one), or None
    if it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory", "check --config or AIM_CONFIG") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}", "check the file's permissions") from None


def load_config(explicit: str | os.PathLike | None = None, *, must_exist: bool = True) -> Config:
    path = find_config_path(explicit)
    if path is None:
        if must_exist:
            raise ConfigError(
                f"no {CONFIG_NAME} found in this directory or its parents",
                "create one with `aim_cli repo create`, or pass --config or set AIM_CONFIG",
            )
        return Config(_checked_path(Path.cwd().absolute() / CONFIG_NAME))
    data = _read_bytes(_checked_path(path))
    if data is None:
        if must_exist:
            raise ConfigError(f"config file {path} does not exist", "check --config or AIM_CONFIG")
        return Config(path)
    return parse_config(path, data)


def _entry_for_yaml(repo: RepoConfig, cfg_dir: Path, given_path: str) -> dict:
    entry = {"type": repo.type, "path": given_path}
    for key in ("region", "endpoint_url", "profile", "addressing_style"):
        value = getattr(repo, key)
        if value:
            entry[key] = value
    return entry


def _rewrite(cfg_path: Path, mutate) -> None:
    """Load the file with ruamel's round-trip loader, apply ``mutate(repos_map)``, write atomically."""
    import io

    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    data = _read_bytes(cfg_path) or b""
    # The writer parses only text the strict reader accepts: no alias bomb reaches ruamel, and
    # the file checked is the file edited.
    parse_config(cfg_path, data)
    yaml = YAML()  # round-trip: comments, key order and flow style survive
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold a long entry of a hand-reviewed file over two lines
    doc = yaml.load(_decode(cfg_path, data)) or CommentedMap()
    if doc.get("repos") is None:
        doc["repos"] = CommentedMap()
    mutate(doc["repos"])
    out = io.StringIO()
    yaml.dump(doc, out)
    target = cfg_path.resolve()  # a symlinked config stays a symlink: write its target
    try:
        _replace_file(target, out.getvalue().encode("utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot write {cfg_path}: {e.strerror}", "check the directory's permissions") from None


def _replace_file(target: Path, data: bytes) -> None:
    """Replace ``target`` by a rename, keeping its permission bits (a 0600 config stays 0600):
    util.fs.write_beside (random O_EXCL|O_NOFOLLOW temp name beside it, fsync, rename)."""
    from aim_cli.util.fs import write_beside  # and ctypes with it: keep `repo list` quick to start

    write_beside(target, data)


def check_unused(cfg: Config, name: str) -> None:
    if name in cfg.repos:
        raise ConflictError(
            f"repository {name!r} already exists in {cfg.path}",
            "choose another name, or remove it first with `aim_cli repo delete`",
        )


def add_repo(cfg: Config, repo: RepoConfig, given_path: str) -> Config:
    """Add ``repo`` to the file; ``given_path`` is written as the user typed it."""
    check_unused(cfg, repo.name)
    entry = _entry_for_yaml(repo, cfg.path.parent, given_path)

    def mutate(repos):
        from ruamel.yaml.comments import CommentedMap

        m = CommentedMap(entry)
        m.fa.set_flow_style()
        repos[repo.name] = m

    _rewrite(cfg.path, mutate)
    return load_config(cfg.path)


def remove_repo(cfg: Config, name: str) -> RepoConfig:
    repo = cfg.repo(name)

    def mutate(repos):
        if name not in repos:  # ruamel reads YAML 1.2: to it a key like 0o17 is a number
            raise ConfigError(
                f"{cfg.path}: cannot find the key of repository {quoted(name)} to remove it",
                "quote the name in the file, or remove the entry by hand",
            )
        del repos[name]

    _rewrite(cfg.path, mutate)
    return repo
