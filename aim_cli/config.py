"""model_repos.yaml: find, load, validate, save.

The file is edited by hand and reviewed in git, so saving keeps its comments and key order
(ruamel.yaml round trip) and replaces it atomically (temp file + rename).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from aim_cli.errors import ConfigError, ConflictError, NotFoundError, UsageError

CONFIG_NAME = "model_repos.yaml"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
REPO_TYPES = ("local", "s3")
# Keys each repository type accepts; anything else is a typo we refuse rather than ignore.
ALLOWED_KEYS = {
    "local": {"type", "path"},
    "s3": {"type", "path", "region", "endpoint_url", "profile", "addressing_style"},
}
ADDRESSING_STYLES = ("auto", "virtual", "path")


def check_name(kind: str, name: str) -> str:
    """Validate a repository, model or tag name (DESIGN.md section 2)."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise UsageError(
            f"invalid {kind} name {name!r}",
            "use 1-128 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit",
        )
    return name


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


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ("bucket", "some/prefix") (no leading or trailing slash)."""
    if not url.startswith("s3://"):
        raise ConfigError(f"S3 path {url!r} does not start with s3://", "write it as s3://BUCKET/PREFIX")
    rest = url[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ConfigError(f"S3 path {url!r} names no bucket", "write it as s3://BUCKET/PREFIX")
    return bucket, prefix.strip("/")


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
                f"unknown repository {name!r} in {self.path} (known: {known})",
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


def parse_entry(cfg_path: Path, name: str, entry: object) -> RepoConfig:
    where = f"{cfg_path}: repository {name!r}"
    try:
        check_name("repository", name)
    except UsageError as e:
        raise ConfigError(f"{where}: {e.message}", e.hint) from None
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a mapping with at least 'type' and 'path'", "see the README")
    rtype = entry.get("type")
    if rtype not in REPO_TYPES:
        raise ConfigError(f"{where}: 'type' must be one of {', '.join(REPO_TYPES)}, not {rtype!r}", "fix the file")
    unknown = set(entry) - ALLOWED_KEYS[rtype]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}",
            f"{rtype} repositories accept {', '.join(sorted(ALLOWED_KEYS[rtype]))}",
        )
    for key, value in entry.items():
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: {key!r} must be a non-empty string", "fix the file")
    path = entry.get("path")
    if not path:
        raise ConfigError(f"{where} has no 'path'", "add the directory or s3://bucket/prefix")
    if rtype == "local":
        p = Path(os.path.expanduser(path))
        if not p.is_absolute():
            p = cfg_path.parent / p
        path = str(Path(os.path.normpath(p)))
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


def _strict_loader():
    """A SafeLoader that refuses duplicate keys: pyyaml keeps the last one silently, and a
    hand-merged file naming a repository twice would then point at the wrong storage."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        pass

    def construct_mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return loader.construct_mapping(node, deep=deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return StrictLoader


def parse_config(cfg_path: Path, text: str) -> Config:
    import yaml

    try:
        data = yaml.load(text, Loader=_strict_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{cfg_path}: {e.problem}{at}", "each repository may be named only once") from None
    except yaml.YAMLError as e:
        # The context mark (where an unclosed quote or bracket opened) is where the fix goes;
        # the problem mark may point past the end of the file.
        mark = getattr(e, "context_mark", None) or getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None)
        what = f" ({problem})" if problem else ""
        raise ConfigError(f"{cfg_path} is not valid YAML{at}{what}", "fix the syntax (see the README)") from None
    if data is None:
        data = {"repos": {}}
    if not isinstance(data, dict):
        raise ConfigError(f"{cfg_path} must be a mapping with the single key 'repos'", "see the README")
    unknown = set(data) - {"repos"}
    if unknown:
        raise ConfigError(f"{cfg_path}: unknown top-level key(s) {', '.join(sorted(map(str, unknown)))}",
                          "the file holds only 'repos:'; see the README")
    repos = data.get("repos") or {}
    if not isinstance(repos, dict):
        raise ConfigError(f"{cfg_path}: 'repos' must be a mapping of name to settings", "see the README")
    return Config(cfg_path, {str(n): parse_entry(cfg_path, str(n), e) for n, e in repos.items()})


def load_config(explicit: str | os.PathLike | None = None, *, must_exist: bool = True) -> Config:
    path = find_config_path(explicit)
    if path is None:
        if must_exist:
            raise ConfigError(
                f"no {CONFIG_NAME} found in this directory or its parents",
                "create one with `aim_cli repo create`, or pass --config or set AIM_CONFIG",
            )
        return Config(Path.cwd().absolute() / CONFIG_NAME)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if must_exist:
            raise ConfigError(f"config file {path} does not exist", "check --config or AIM_CONFIG") from None
        return Config(path)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}", "check the file's permissions") from None
    return parse_config(path, text)


def _entry_for_yaml(repo: RepoConfig, cfg_dir: Path, given_path: str) -> dict:
    entry = {"type": repo.type, "path": given_path}
    for key in ("region", "endpoint_url", "profile", "addressing_style"):
        value = getattr(repo, key)
        if value:
            entry[key] = value
    return entry


def _rewrite(cfg_path: Path, mutate) -> None:
    """Load the file with ruamel's round-trip loader, apply ``mutate(repos_map)``, write atomically."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    yaml = YAML()  # round-trip: comments, key order and flow style survive
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold a long entry of a hand-reviewed file over two lines
    if cfg_path.exists():
        with open(cfg_path, encoding="utf-8") as f:
            doc = yaml.load(f)
    else:
        doc = None
    if doc is None:
        doc = CommentedMap()
    if doc.get("repos") is None:
        doc["repos"] = CommentedMap()
    mutate(doc["repos"])
    target = cfg_path.resolve()  # a symlinked config stays a symlink: write its target
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else 0o644
        with open(tmp, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), mode)  # keep the file's permissions (a 0600 config stays 0600)
            yaml.dump(doc, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {cfg_path}: {e.strerror}", "check the directory's permissions") from None


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
        del repos[name]

    _rewrite(cfg.path, mutate)
    return repo
