"""What a published snapshot holds, and where it lives in Redis or in a directory.

A snapshot is one immutable version of the serving catalogue: every user's code and recent positive items,
every item's code and title, and the manifest of the model the codes were trained with. Readers follow the
active-version pointer, so a publish becomes visible in one atomic step (see `model_store/publish/`).

Redis layout (every key built here and nowhere else; `ns` defaults to "binllm"):
    {ns}:active                      -> version id of the active snapshot
    {ns}:versions                    -> list of published version ids, newest first
    {ns}:publish-lock                -> the publisher's lock token while one publishes or rolls back
    {ns}:v:{version}:manifest        -> SnapshotManifest JSON
    {ns}:v:{version}:user:{user_id}  -> UserEntry JSON (defaults left out: `entry_json`)
    {ns}:v:{version}:item:{item_id}  -> ItemEntry JSON (defaults left out: `entry_json`)

Directory layout: {root}/ACTIVE (version id), {root}/{version}/manifest.json, users.jsonl, items.jsonl
(one `{"id": ..., **entry}` object per line).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from model_store.contract.fusion import CodeScore, ScoreFusion
from model_store.contract.prompts import MAX_HISTORY_TITLES, PromptStyle, unpack_embedding

DEFAULT_NAMESPACE = "binllm"
MANIFEST_FILENAME = "binllm.json"


MAX_TITLE_CHARS = (
    300  # longer titles are cut: a prompt is sized by titles, and one huge value must not size it
)


def _last_history(values: list[str]) -> list[str]:
    return values[-MAX_HISTORY_TITLES:]


class UserEntry(BaseModel):
    """A user as the service sees it: the code (None if the encoder never saw the user) and history.

    The history is item ids, not titles: the titles already live in the item entries, so a user costs a
    few bytes per history item instead of a title's length (`bench/publish_scale.py` measures it). Only the
    last MAX_HISTORY_TITLES are kept, whatever a snapshot holds: the prompt shows no more, and a request
    reads the items of the history kept, so a 200,000-id history costs no 200,000 reads.
    """

    model_config = ConfigDict(frozen=True)

    code: int | None = None
    embedding: str | None = Field(
        default=None, description="Packed CF embedding (`prompts.pack_embedding`), for a CoLLM model only."
    )
    history: list[str] = Field(
        default_factory=list, description="<= 10 positive item ids, newest last; titles from their ItemEntry."
    )
    history_titles: list[str] = Field(
        default_factory=list,
        description="Only in snapshots published before item-id histories: the titles themselves. "
        "Still read (when `history` is empty), never written.",
    )

    _bound_history = field_validator("history", "history_titles")(_last_history)


class ItemEntry(BaseModel):
    """An item as the service sees it: the code (None for a cold item) and its title."""

    model_config = ConfigDict(frozen=True)

    code: int | None = None
    embedding: str | None = Field(
        default=None, description="Packed CF embedding (`prompts.pack_embedding`), for a CoLLM model only."
    )
    title: str = Field(description=f"Cut to {MAX_TITLE_CHARS} characters when longer.")

    @field_validator("title")
    @classmethod
    def _bound_title(cls, title: str) -> str:
        return title[:MAX_TITLE_CHARS]


class ModelManifest(BaseModel):
    """`binllm.json`, written beside an exported model: everything needed to prompt and score it."""

    model_config = ConfigDict(protected_namespaces=())

    model_version: str
    prompt_style: PromptStyle = Field(default_factory=PromptStyle)
    with_codes: bool = Field(default=True, description="Trained on prompts with codes (stage 2).")
    yes_token: str
    no_token: str
    yes_token_id: int
    no_token_id: int
    code_version: str | None = Field(
        default=None, description="The codes directory the model was tuned with."
    )
    metrics: dict[str, Any] = Field(default_factory=dict)
    base_model: str | None = None
    fusion: ScoreFusion | None = Field(
        default=None,
        description="When set, the served score blends P(Yes) with the code score (contract/fusion.py).",
    )
    embedding_tokens: int = Field(
        default=0,
        ge=0,
        description="CoLLM: packed CF embeddings written into the vocabulary as tokens (for vLLM), from the "
        "codes directory `code_version` names; 0 = served in-process only.",
    )


class UnknownEmbeddings(BaseModel):
    """The learned embeddings of an unknown user and item (packed), published for a CoLLM model."""

    model_config = ConfigDict(frozen=True)

    width: int = Field(ge=1, description="Values per embedding.")
    user: str
    item: str


class SnapshotManifest(BaseModel):
    """The manifest of one published snapshot."""

    model_config = ConfigDict(protected_namespaces=())

    version: str
    code_version: str
    model: ModelManifest
    n_users: int
    n_items: int
    created_at: str
    code_score: CodeScore | None = Field(
        default=None,
        description="The codes' own score, published with them: what the service answers (marked degraded) "
        "when the LLM cannot; None in snapshots published before it existed.",
    )
    unknown_embeddings: UnknownEmbeddings | None = Field(
        default=None,
        description="A CoLLM model's (encoding 'embeddings') learned unknown user and item embeddings, for "
        "cold ids under the style's unknown_codes='learned'; None for a BinLLM model.",
    )


def code_problem(code: int | None, bits: int) -> tuple[str, str] | None:
    """Why a stored code cannot be written in `bits` bits: (kind, text) with kind "code_sign" or
    "code_width"; None when it can, or when there is no code (a cold user or item)."""
    if code is None:
        return None
    if code < 0:
        return "code_sign", f"negative code {code}"
    if code >> bits:
        return "code_width", f"code {code} needs {code.bit_length()} bits, the manifest says {bits}"
    return None


def entry_problem(entry: UserEntry | ItemEntry, manifest: SnapshotManifest) -> tuple[str, str] | None:
    """Why an entry cannot be served under `manifest`: its code (`code_problem`), or an embedding that is not
    packed values of the manifest's width ("embedding"; no embedding is a cold id, not a problem). None when
    it can be served."""
    problem = code_problem(entry.code, manifest.model.prompt_style.bits)
    if problem is not None or entry.embedding is None:
        return problem
    width = manifest.unknown_embeddings.width if manifest.unknown_embeddings is not None else None
    try:
        values = len(unpack_embedding(entry.embedding))
    except ValueError as exc:
        return "embedding", str(exc)
    if width is not None and values != width:
        return "embedding", f"embedding of {values} values, the manifest says {width}"
    return None


def entry_json(entry: BaseModel) -> str:
    """How a user or item entry is stored: compact JSON without default fields (readers fill them in)."""
    return entry.model_dump_json(exclude_defaults=True)


def active_key(ns: str = DEFAULT_NAMESPACE) -> str:
    """The key holding the active version id."""
    return f"{ns}:active"


def versions_key(ns: str = DEFAULT_NAMESPACE) -> str:
    """The list of published version ids, newest first."""
    return f"{ns}:versions"


def publish_lock_key(ns: str = DEFAULT_NAMESPACE) -> str:
    """Held (with an expiry) by the one publisher or rollback running in this namespace."""
    return f"{ns}:publish-lock"


def version_prefix(version: str, ns: str = DEFAULT_NAMESPACE) -> str:
    """Every key of one snapshot starts with this; used to delete an old version."""
    return f"{ns}:v:{version}:"


def manifest_key(version: str, ns: str = DEFAULT_NAMESPACE) -> str:
    """The SnapshotManifest of one version."""
    return f"{version_prefix(version, ns)}manifest"


def user_key(version: str, user_id: str, ns: str = DEFAULT_NAMESPACE) -> str:
    """One user's UserEntry."""
    return f"{version_prefix(version, ns)}user:{user_id}"


def item_key(version: str, item_id: str, ns: str = DEFAULT_NAMESPACE) -> str:
    """One item's ItemEntry."""
    return f"{version_prefix(version, ns)}item:{item_id}"


def entry_key_pattern(version: str, kind: str, ns: str = DEFAULT_NAMESPACE) -> str:
    """A SCAN MATCH pattern for every `kind` ("user" or "item") key of one version (glob characters of the
    namespace and version escaped)."""
    prefix = f"{version_prefix(version, ns)}{kind}:"
    return "".join("\\" + char if char in "\\*?[]" else char for char in prefix) + "*"


CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def split_cluster_url(url: str) -> tuple[str, bool]:
    """`redis+cluster://host:port` (or `rediss+cluster://`) names a Redis Cluster seed node: returns the plain
    URL for the client and True; any other URL comes back unchanged with False."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in CLUSTER_SCHEMES:
        return f"{CLUSTER_SCHEMES[scheme.lower()]}://{rest}", True
    return url, False


def cluster_seed_nodes(url: str) -> tuple[str, list[tuple[str, int]]]:
    """A cluster URL naming one or several seed nodes (`redis://[user:pw@]h1:p1,h2:p2[/db][?query]`, after
    `split_cluster_url`): the URL with only the first node, for the client's other settings, and every
    (host, port), so a client can start from whichever seed answers.

    >>> cluster_seed_nodes("redis://:pw@a:7000,b:7001/0")
    ('redis://:pw@a:7000/0', [('a', 7000), ('b', 7001)])
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a URL: {url!r}")
    authority, slash, tail = rest.partition("/")
    if not slash:
        authority, query, tail = rest.partition("?")
        tail = f"{query}{tail}"
    credentials, at, hosts = authority.rpartition("@")
    nodes: list[tuple[str, int]] = []
    for part in hosts.split(","):
        host, colon, port = part.strip().rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"seed node {part.strip()!r} of the Redis Cluster URL is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    host_part = hosts.split(",")[0].strip()
    first = f"{credentials}{at}{host_part}"
    return f"{scheme}://{first}{slash}{tail}", nodes


ACTIVE_FILENAME = "ACTIVE"
SNAPSHOT_MANIFEST_FILENAME = "manifest.json"
USERS_FILENAME = "users.jsonl"
ITEMS_FILENAME = "items.jsonl"
