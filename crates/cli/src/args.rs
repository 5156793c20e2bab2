//! The command line as clap parses it: a literal description with no side effects. Resolution
//! (finding the depot, loading the manifest) happens after parsing, in the commands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const EXAMPLES_INIT: &str = "Examples:\n  retro init                 # creates ./.retro\n  retro init /var/lib/bank   # a depot in that directory";
const EXAMPLES_APPLY: &str = "Examples:\n  retro apply '{\"path\":\"accounts/alice\",\"name\":\"open\",\"params\":{\"owner\":\"Alice\"}}'\n  echo '{\"path\":\"accounts/alice\",\"name\":\"deposit\",\"params\":{\"amount\":50}}' | retro apply -\n  retro apply --manifest fixtures/domain/manifest.json --session \"$S\" '{\"path\":\"notes/1\",\"name\":\"add\",\"params\":{\"text\":\"hi\"}}'\n  printf '%s\\n' '{\"path\":\"accounts/bob\",\"name\":\"open\",\"params\":{\"owner\":\"Bob\"}}' | retro apply --batch --json\n\nThe domain manifest is --manifest FILE, else $RETRO_MANIFEST, else <depot>/manifest.json, else the\nbuilt-in example bank (kind 'accounts'). The session is --session ID, else $RETRO_SESSION, else 'cli'.";
const EXAMPLES_LOG: &str = "Examples:\n  retro log\n  retro log --oneline -n 5\n  retro log --partition 'accounts/*' --json\n  retro log refs/heads/master~2";
const EXAMPLES_CAT: &str = "Examples:\n  retro cat-object -p HEAD\n  retro cat-object -t 3f2a9c\n  retro log --oneline --json | jq -r .checkpoint | retro cat-object --batch";
const EXAMPLES_EVENTS: &str =
    "Examples:\n  retro events 'accounts/*'\n  retro events '**' --since HEAD~3 --json\n  retro events accounts/alice --upcast --manifest domain/manifest.json   # as the domain reads them";
const EXAMPLES_UPDATE_REF: &str = "Examples:\n  retro update-ref refs/tags/audit HEAD            # create or move\n  retro update-ref refs/heads/master HEAD~1 HEAD   # move only if it is still HEAD\n  retro update-ref -d refs/tags/audit";
const EXAMPLES_GC: &str = "Examples:\n  retro gc                 # repack everything into one pack\n  retro gc --prune 14d     # also drop unreachable objects older than 14 days";
const EXAMPLES_WATCH: &str = "Examples:\n  retro watch 'accounts/*'                       # new checkpoints touching accounts\n  retro watch --all --json '**'                   # everything, from the start, as JSON lines\n  retro watch --consumer projector 'accounts/*'   # resumes where it left off after a crash";
const EXAMPLES_GROUP_RUN: &str = "Examples:\n  retro group run billing 'accounts/*' --json       # one member; start more anywhere\n  retro group run billing 'accounts/*' --member host-a --lease-ms 5000\n\nPartitions are hashed into slots that members lease; each partition is delivered in order by one\nmember at a time, at least once: a redelivery has the same checkpoint id and event index.\nSee docs/operations.md, \"Running a consumer group\".";
const EXAMPLES_GROUP_STATUS: &str =
    "Examples:\n  retro group status                # every group, one line each\n  retro group status billing --json";
const EXAMPLES_SERVE: &str = "Examples:\n  retro serve                                   # http://127.0.0.1:7070/\n  RETRO_TOKEN=secret retro serve --listen 0.0.0.0:7070\n  curl -X POST -H 'Content-Type: application/json' -H 'X-Retro-Session: s1' -d '{\"path\":\"accounts/a\",\"name\":\"open\",\"params\":{\"owner\":\"A\"}}' localhost:7070/apply\n\nSee docs/http.md for every endpoint.";
const EXAMPLES_SYNC: &str = "Examples:\n  retro sync .retro postgres://app@db.internal/bank      # push a files depot to PostgreSQL\n  retro sync postgres://app@db.internal/bank backup/     # and back\n  retro sync --force src/ dst/                           # also move refs that are not fast-forwards\n  retro sync --partitions 'notes/**' src/ part/          # a partial clone fetches more partitions\n\nObjects are copied byte for byte (ids are identical on both sides), oldest first, each batch durable\nbefore the next; refs move last, fast-forward only unless --force. An interrupted sync resumes.";
const EXAMPLES_CLONE: &str = "Examples:\n  retro clone .retro postgres://app@db.internal/bank\n  retro clone postgres://app@db.internal/bank ./copy\n  retro clone --partitions 'accounts/*' .retro ./accounts   # every checkpoint, only accounts' events";
const EXAMPLES_PROJECT: &str = "Examples:\n  retro project run balances                 # feed it until interrupted\n  retro project run --once                   # every declared projection, until caught up\n  retro project status --json\n  retro project rebuild balances             # a new generation beside the live one\n  retro project retry balances               # deliver the parked batch again\n\nProjections are declared in the domain manifest (\"projections\": docs/handlers.md).";
const EXAMPLES_TEST: &str = "Examples:\n  retro test fixtures/specs/bank.jsonl                        # the built-in bank\n  retro test --manifest fixtures/domain/manifest.json my.jsonl   # exec handlers\n\nOne case a line: {\"name\",\"given\":[events],\"when\":{command},\"then\":{\"events\":[…]} | {\"rejected\":\"code\"} | {\"error\":\"text\"}}\n(docs/handlers.md). Prints TAP; exits 0 when every case passes, 7 when one fails, 1 on a malformed line.";
const EXAMPLES_VERIFY: &str = "Examples:\n  retro verify                                  # every command of HEAD's history\n  retro verify --signatures --trusted-key 8a88e3dd…   # every checkpoint signed by that key?\n  retro verify --manifest new/manifest.json     # does the upgraded domain change anything?\n  retro verify HEAD~10..HEAD --json\n\nExits 0 when every command emits its recorded events again, 7 when one diverges. With --signatures,\n7 when a checkpoint is unsigned, badly signed, or signed by a key not given as --trusted-key.";
const EXAMPLES_PROVE: &str = "Examples:\n  retro prove sha256:92854f07… > proof.json            # at HEAD\n  retro prove 92854f07 --at refs/heads/master~3 > proof.json\n\nThe event must be in REV's affix or in the affix of a checkpoint on REV's first-parent chain\n(a merged branch's events through the merge checkpoint). See docs/cli.md.";
const EXAMPLES_VERIFY_PROOF: &str = "Examples:\n  retro verify-proof proof.json\n  retro verify-proof --trusted sha256:d673c469… proof.json --json\n\nNeeds no depot. Exits 0 when the proof verifies, 7 when it does not (tampered, or at another\ncheckpoint than --trusted), 1 when the file is not a proof.";
const EXAMPLES_BLAME: &str =
    "Examples:\n  retro blame accounts/alice\n  retro blame registry/accounts --json";
const EXAMPLES_BISECT: &str = "Examples:\n  retro bisect run --good HEAD~20 --bad HEAD -- sh -c 'retro events --at \"$RETRO_REV\" accounts/alice | grep -q Frozen && exit 1 || exit 0'\n\nCMD runs once per step with RETRO_REV (the checkpoint's full id) and RETRO_DEPOT set: exit 0 is good,\n125 skips the checkpoint, anything else is bad.";
const EXAMPLES_EXPORT: &str = "Examples:\n  retro export > history.jsonl\n  retro --depot other init && retro --depot other import history.jsonl";

const EXAMPLES_BRANCH: &str = "Examples:\n  retro branch feature              # a branch at HEAD\n  retro branch hotfix HEAD~2         # a branch at another revision\n  retro branch --list                # the branches, the current one marked '*'";
const EXAMPLES_SWITCH: &str = "Examples:\n  retro switch feature               # HEAD now points at refs/heads/feature\n  retro switch -c experiment         # create it at HEAD, then switch";
const EXAMPLES_MERGE: &str = "Examples:\n  retro merge feature                # into the current branch\n  retro merge refs/heads/feature --json\n\nA fast-forward when possible; else one merge checkpoint with two parents when the two sides wrote\ndisjoint partitions; else the other side's commands re-run on top (exit 4, nothing merged, when the\ndomain rejects one). See docs/branches.md.";
const EXAMPLES_CONFIG: &str = "Examples:\n  retro config signing-key --generate          # a new ed25519 key in <depot>/signing.key\n  retro config signing-key ~/keys/retro.key    # sign with this key file\n  retro config signing-key                     # which key signs (its public half)\n  retro config signing-key --unset             # stop signing";

/// retro: a Git-like, content-addressed event depot.
#[derive(Debug, Parser)]
#[command(
    name = "retro",
    version,
    about,
    propagate_version = true,
    disable_help_subcommand = true
)]
pub struct Cli {
    /// The depot: a directory or a postgres:// URL (default: $RETRO_DEPOT, else the nearest
    /// .retro above the working directory). A go-retro depot directory works too.
    #[arg(long, global = true, value_name = "DIR|URL")]
    pub depot: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Commands,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Create a depot (default ./.retro)
    #[command(after_help = EXAMPLES_INIT)]
    Init {
        /// Where to create it.
        dir: Option<PathBuf>,
        /// The event format new commits write: `sealed` (redactable, the default) or `plain`
        /// (go-retro's; ids reproducible from the same history, not redactable with a
        /// verifiable id; see docs/redaction.md).
        #[arg(long, value_name = "FORMAT", default_value = "sealed", value_parser = ["sealed", "plain"])]
        events: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Apply a command: '{"path":"kind/id","name":"command","params":{...}}' or - for stdin
    #[command(after_help = EXAMPLES_APPLY)]
    Apply {
        /// The command JSON, or - to read it from stdin.
        #[arg(required_unless_present = "batch", conflicts_with = "batch")]
        command: Option<String>,
        /// Read commands as JSON lines on stdin until EOF, apply each as its own checkpoint and
        /// answer each with one line on stdout once it is durable (see docs/cli.md).
        #[arg(long)]
        batch: bool,
        /// The session applying it.
        #[arg(long, env = "RETRO_SESSION")]
        session: Option<String>,
        /// The ref to move (default HEAD).
        #[arg(long = "ref", value_name = "REF")]
        target: Option<String>,
        /// The domain manifest.
        #[arg(long, env = "RETRO_MANIFEST", value_name = "FILE")]
        manifest: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// The command id: when it was already applied, nothing is written and the original
        /// checkpoint is printed (the JSON key "id" does the same).
        #[arg(long = "id", value_name = "ID", conflicts_with = "batch")]
        command_id: Option<String>,
        /// The correlation id kept in the checkpoint (JSON key "correlation_id").
        #[arg(long, value_name = "ID", conflicts_with = "batch")]
        correlation_id: Option<String>,
        /// The causation id kept in the checkpoint (JSON key "causation_id").
        #[arg(long, value_name = "ID", conflicts_with = "batch")]
        causation_id: Option<String>,
    },
    /// Sessions: start or end one
    #[command(subcommand)]
    Session(SessionCommand),
    /// Consumer groups: several processes share a durable consumer's partitions
    #[command(subcommand)]
    Group(GroupCommand),
    /// Show history, newest first
    #[command(after_help = EXAMPLES_LOG)]
    Log(LogArgs),
    /// Print an object: raw bytes, or its kind, size, or a pretty form
    #[command(name = "cat-object", after_help = EXAMPLES_CAT)]
    CatObject(CatArgs),
    /// Show a checkpoint with its affix and events expanded
    Show {
        /// The revision (default HEAD).
        rev: Option<String>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        /// Show the events as the domain reads them: upcast to their newest schema version,
        /// each changed one marked with the stored name and version.
        #[arg(long)]
        upcast: bool,
        /// The domain manifest whose upcasters --upcast applies (default: as for apply).
        #[arg(long, value_name = "FILE", requires = "upcast")]
        manifest: Option<PathBuf>,
    },
    /// The events of partitions matching a glob, oldest first
    #[command(after_help = EXAMPLES_EVENTS)]
    Events {
        /// Partition glob: '*' within a segment, '**' across (default '**').
        glob: Option<String>,
        /// Only events after this checkpoint.
        #[arg(long, value_name = "REV")]
        since: Option<String>,
        /// The events as of this checkpoint (its first-parent history) instead of HEAD.
        #[arg(long, value_name = "REV")]
        at: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// The events as the domain reads them: upcast to their newest schema version, each
        /// changed one marked with the stored name and version (its id stays the stored one).
        #[arg(long)]
        upcast: bool,
        /// The domain manifest whose upcasters --upcast applies (default: as for apply).
        #[arg(long, value_name = "FILE", requires = "upcast")]
        manifest: Option<PathBuf>,
    },
    /// Partitions matching a glob, with event counts
    Partitions {
        /// Partition glob (default '**').
        glob: Option<String>,
        /// The partitions as of this checkpoint (its first-parent history) instead of HEAD.
        #[arg(long, value_name = "REV")]
        at: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// List refs
    Refs {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Move a ref by compare-and-swap: to NEW, only if it holds OLD (0 for "must not exist")
    #[command(name = "update-ref", after_help = EXAMPLES_UPDATE_REF)]
    UpdateRef {
        /// Delete the ref instead.
        #[arg(short = 'd', long)]
        delete: bool,
        /// The ref, such as refs/heads/master.
        name: String,
        /// The new value (a revision), or with -d the expected old value.
        #[arg(required_unless_present = "delete")]
        new: Option<String>,
        /// The expected old value (a revision, or 0 for "must not exist").
        #[arg(conflicts_with = "delete")]
        old: Option<String>,
        /// The reflog message.
        #[arg(short = 'm', long, default_value = "update-ref")]
        message: String,
    },
    /// A ref's history of moves (default HEAD)
    Reflog {
        /// The ref.
        name: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Verify every object and ref, and the partition index
    Fsck {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a proof (JSON) that an event is in the history a checkpoint commits to
    #[command(after_help = EXAMPLES_PROVE)]
    Prove {
        /// The event's id (or a unique prefix of it).
        event: String,
        /// The checkpoint whose log the proof is against (default HEAD); it must have a log
        /// field (every checkpoint retro commits now has one).
        #[arg(long, value_name = "REV")]
        at: Option<String>,
    },
    /// Check an inclusion proof by itself (no depot needed) and print what it proves
    #[command(after_help = EXAMPLES_VERIFY_PROOF)]
    VerifyProof {
        /// The proof file ('-': stdin).
        file: PathBuf,
        /// The checkpoint id you trust: the proof must be at exactly that checkpoint.
        #[arg(long, value_name = "ID")]
        trusted: Option<String>,
        /// Print what it proves as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make aggregate snapshots now for the partitions matching a glob (derived data: see
    /// docs/cli.md)
    #[command(
        after_help = "Examples:\n  retro snapshot 'accounts/*'\n  retro snapshot '**' --json"
    )]
    Snapshot {
        /// Partition glob.
        glob: String,
        /// The domain manifest.
        #[arg(long, env = "RETRO_MANIFEST", value_name = "FILE")]
        manifest: Option<PathBuf>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Erase the data of events for good (their ids, checkpoints and fsck stay valid) and
    /// record the redaction in history; a re-run finishes one a crash interrupted
    #[command(
        after_help = "Examples:\n  retro redact sha256:3f2a… --reason 'GDPR erasure request 2026-118'\n  retro redact 3f2a 9c1d --reason 'personal data' --json\n\nSee docs/redaction.md for what is guaranteed and what is not."
    )]
    Redact {
        /// The events: ids or unique prefixes.
        #[arg(required = true, value_name = "EVENT-ID")]
        events: Vec<String>,
        /// Why (one line; recorded in the redaction checkpoint and the tombstones).
        #[arg(long, required = true)]
        reason: String,
        /// The session redacting them.
        #[arg(long, env = "RETRO_SESSION")]
        session: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Repack objects into one pack; optionally prune unreachable ones
    #[command(after_help = EXAMPLES_GC)]
    Gc {
        /// Prune unreachable objects older than this (e.g. 0, 30m, 14d).
        #[arg(long, value_name = "AGE")]
        prune: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Where the depot is, what HEAD holds (checkpoints, partitions, events), and how far each
    /// durable consumer is behind HEAD
    #[command(after_help = "Examples:\n  retro status\n  retro status --json")]
    Status {
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the partition index from history
    Reindex,
    /// Rebuild what fsck found damaged and can be derived (pack indexes, pack headers, refs from
    /// the journal and reflogs, the failed-command log, the partition index); exit 5 when
    /// something could not be repaired
    #[command(after_help = "Examples:
  retro fsck || retro repair    # then 'retro fsck' again

Records damaged inside a pack and missing objects cannot be derived: repair names them; restore them from a clone ('retro sync CLONE .') or a backup.")]
    Repair {
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// The recorded failed commands, with their errors
    Failed {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Write history and its failed commands as JSON lines (oldest first), for import elsewhere
    #[command(after_help = EXAMPLES_EXPORT)]
    Export {
        /// The revision to export (default HEAD).
        rev: Option<String>,
        /// Write to this file instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Read JSON lines of checkpoints and failed commands (the bulk path)
    Import {
        /// The file (default: stdin, or -).
        file: Option<PathBuf>,
        /// Commits per fsync.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Copy what DST lacks from SRC (directories or postgres:// URLs), then move DST's refs
    #[command(after_help = EXAMPLES_SYNC)]
    Sync {
        /// The depot to copy from.
        src: PathBuf,
        /// The depot to copy into (it must exist).
        dst: PathBuf,
        /// Move refs that are not fast-forwards too.
        #[arg(long)]
        force: bool,
        /// Widen DST, a partial clone, to these partitions too (a glob; repeatable) and fetch
        /// their events.
        #[arg(long = "partitions", value_name = "GLOB")]
        partitions: Vec<String>,
        /// Checkpoints per durable batch.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create DST (a directory or postgres:// URL) with SRC's history and refs
    #[command(after_help = EXAMPLES_CLONE)]
    Clone {
        /// The depot to copy from.
        src: PathBuf,
        /// The depot to create.
        dst: PathBuf,
        /// A partial clone: every checkpoint and affix, but only the events of partitions
        /// matching this glob (repeatable); DST must be a directory.
        #[arg(long = "partitions", value_name = "GLOB")]
        partitions: Vec<String>,
        /// Checkpoints per durable batch.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the built-in example domain in a fresh depot and print what happened
    Demo {
        /// Keep the depot in this directory instead of a temporary one.
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
    },
    /// Run given/when/then cases (a JSON-lines spec) against a domain and print a TAP report
    #[command(after_help = EXAMPLES_TEST)]
    Test {
        /// The spec: one case a line, or - for stdin.
        spec: PathBuf,
        /// The domain manifest (default: the built-in example bank; $RETRO_MANIFEST is not read,
        /// so a spec means the same everywhere).
        #[arg(long, value_name = "FILE")]
        manifest: Option<PathBuf>,
    },
    /// Stream the checkpoints of matching partitions as they land (until interrupted)
    #[command(after_help = EXAMPLES_WATCH)]
    Watch {
        /// Partition glob (default '**').
        glob: Option<String>,
        /// Start after this checkpoint (default: the current head, so only new checkpoints).
        #[arg(long, value_name = "REV", conflicts_with = "all")]
        since: Option<String>,
        /// Start from the first checkpoint.
        #[arg(long)]
        all: bool,
        /// A durable consumer: resume after its last acknowledged checkpoint, and acknowledge
        /// each one after printing it (its position is refs/consumers/NAME).
        #[arg(long, value_name = "NAME")]
        consumer: Option<String>,
        /// The ref to follow (default HEAD).
        #[arg(long = "ref", value_name = "REF")]
        target: Option<String>,
        /// Exit when nothing arrived for this many seconds (for scripts).
        #[arg(long, value_name = "SECS")]
        idle_exit: Option<f64>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Projections: run them, show their status, rebuild one, retry a parked one
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Serve the depot over HTTP: the API and a read-only web UI
    #[command(after_help = EXAMPLES_SERVE)]
    Serve {
        /// Also run every projection the domain manifest declares, beside the server.
        #[arg(long)]
        projections: bool,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: String,
        /// Require this bearer token for writes (POST /apply); it also opens reads, and admin
        /// routes when no admin token is set.
        #[arg(
            long,
            env = "RETRO_TOKEN",
            hide_env_values = true,
            value_name = "TOKEN"
        )]
        token: Option<String>,
        /// Require this bearer token (or the write or admin token) for reads; without it, reads
        /// are open. Alone, it guards every route.
        #[arg(
            long,
            env = "RETRO_READ_TOKEN",
            hide_env_values = true,
            value_name = "TOKEN"
        )]
        read_token: Option<String>,
        /// Require this bearer token for admin routes (GET /admin/stats); it opens every route.
        #[arg(
            long,
            env = "RETRO_ADMIN_TOKEN",
            hide_env_values = true,
            value_name = "TOKEN"
        )]
        admin_token: Option<String>,
        /// The domain manifest (as for apply).
        #[arg(long, env = "RETRO_MANIFEST", value_name = "FILE")]
        manifest: Option<PathBuf>,
        /// Also accept requests whose Host header is HOST (a name, or NAME:PORT; '*': any).
        /// localhost, 127.0.0.1, `[::1]` and the listening address are always accepted.
        #[arg(long = "allow-host", value_name = "HOST")]
        allow_hosts: Vec<String>,
        /// Seconds a client may take to send a request's headers (else the connection closes).
        #[arg(long, default_value_t = 10, value_name = "SECS",
              value_parser = clap::value_parser!(u64).range(1..=3600))]
        header_timeout: u64,
        /// Seconds a read may take, and a client may take to send an apply's body (408 beyond).
        /// An apply itself is never cut short: it is answered with its outcome.
        #[arg(long, default_value_t = 30, value_name = "SECS",
              value_parser = clap::value_parser!(u64).range(1..=3600))]
        request_timeout: u64,
    },
    /// Re-run recorded commands with the current domain and report any that emit other events
    #[command(after_help = EXAMPLES_VERIFY)]
    Verify {
        /// The checkpoints: A..B (B's first parents after A), or REV (the root up to REV);
        /// default all of HEAD's first-parent history.
        range: Option<String>,
        /// The domain manifest (as for apply).
        #[arg(long, env = "RETRO_MANIFEST", value_name = "FILE")]
        manifest: Option<PathBuf>,
        /// One JSON object per divergence, then a summary.
        #[arg(long)]
        json: bool,
        /// Check every checkpoint's signature instead (all parents of the range's head), naming
        /// each unsigned or badly signed one.
        #[arg(long)]
        signatures: bool,
        /// With --signatures: a public key (64 hex digits) whose signatures are trusted; give it
        /// once per key. Without one, any valid signature passes.
        #[arg(long = "trusted-key", value_name = "PUBKEY", requires = "signatures")]
        trusted_keys: Vec<String>,
    },
    /// Each event of a partition with the checkpoint, command, session and date that added it
    #[command(after_help = EXAMPLES_BLAME)]
    Blame {
        /// The partition, such as accounts/alice.
        partition: String,
        /// One JSON object per event.
        #[arg(long)]
        json: bool,
    },
    /// Find the first checkpoint where a check turns bad
    #[command(subcommand)]
    Bisect(BisectCommand),
    /// Print a shell completion script
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Create a branch at REV (default HEAD), or list the branches
    #[command(after_help = EXAMPLES_BRANCH)]
    Branch {
        /// The new branch's name (it becomes refs/heads/NAME).
        #[arg(required_unless_present = "list", conflicts_with = "list")]
        name: Option<String>,
        /// Where it starts (default HEAD).
        #[arg(conflicts_with = "list")]
        rev: Option<String>,
        /// List the branches; the current one is marked with '*'.
        #[arg(long)]
        list: bool,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a branch the current one: HEAD points at it
    #[command(after_help = EXAMPLES_SWITCH)]
    Switch {
        /// The branch (NAME or refs/heads/NAME).
        name: String,
        /// Create it at HEAD first.
        #[arg(short = 'c', long)]
        create: bool,
    },
    /// Merge REV into the current branch
    #[command(after_help = EXAMPLES_MERGE)]
    Merge {
        /// What to merge: a branch, a ref, an id.
        rev: String,
        /// The session the merge (or the replayed commands' checkpoints) is written in.
        #[arg(long, env = "RETRO_SESSION")]
        session: Option<String>,
        /// The domain manifest a replay runs the commands with (as for apply).
        #[arg(long, env = "RETRO_MANIFEST", value_name = "FILE")]
        manifest: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// This depot's settings
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Help on a command, with examples
    Help {
        /// The command.
        command: Vec<String>,
    },
}

/// `retro session …`
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Start a session and print its id
    Start {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// End a session
    End {
        /// The session id.
        id: String,
    },
}

/// `retro project …`
#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Feed projections their events until interrupted (or, with --once, until caught up)
    #[command(after_help = EXAMPLES_PROJECT)]
    Run {
        /// The projections (default: every one the manifest declares).
        names: Vec<String>,
        /// Return when every generation has caught up with HEAD or is parked (exit 4 if one is
        /// parked), instead of following HEAD.
        #[arg(long)]
        once: bool,
        /// The domain manifest (as for apply).
        #[arg(long, env = "RETRO_MANIFEST", value_name = "FILE")]
        manifest: Option<PathBuf>,
    },
    /// Show each projection's generations, how far behind HEAD they are, and what is parked
    #[command(after_help = EXAMPLES_PROJECT)]
    Status {
        /// Only this projection.
        name: Option<String>,
        /// The domain manifest (as for apply).
        #[arg(long, env = "RETRO_MANIFEST", value_name = "FILE")]
        manifest: Option<PathBuf>,
        /// One JSON object per projection.
        #[arg(long)]
        json: bool,
    },
    /// Start a new generation from the beginning beside the live one; it goes live once caught up
    #[command(after_help = EXAMPLES_PROJECT)]
    Rebuild {
        /// The projection.
        name: String,
        /// The domain manifest (as for apply).
        #[arg(long, env = "RETRO_MANIFEST", value_name = "FILE")]
        manifest: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Un-park a projection: its failing batch is delivered again
    #[command(after_help = EXAMPLES_PROJECT)]
    Retry {
        /// The projection.
        name: String,
        /// Only this generation (default: every parked one).
        #[arg(long, value_name = "N")]
        generation: Option<u64>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `retro group …`
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Join a consumer group and print the events of this member's slots as they land (until
    /// interrupted), acknowledging each checkpoint after printing it
    #[command(after_help = EXAMPLES_GROUP_RUN)]
    Run {
        /// The group's name (1 to 64 of A-Z a-z 0-9 . _ -).
        name: String,
        /// Partition glob (default '**'); every member of a group gives the same.
        glob: Option<String>,
        /// This member's id, unique in the group (default HOST-PID).
        #[arg(long, value_name = "ID")]
        member: Option<String>,
        /// Lease length in milliseconds: a member that stops heartbeating loses its slots this
        /// long after its last heartbeat. Longer than handling one checkpoint takes.
        #[arg(long, value_name = "MS", default_value_t = 10_000)]
        lease_ms: u64,
        /// Slots partitions are hashed into, for a new group (default 64; fixed once created).
        #[arg(long, value_name = "N")]
        slots: Option<u32>,
        /// A new group starts after this checkpoint (default: from the first one).
        #[arg(long, value_name = "REV")]
        since: Option<String>,
        /// The ref to follow, for a new group (default HEAD's branch).
        #[arg(long = "ref", value_name = "REF")]
        target: Option<String>,
        /// Leave the group and exit when nothing arrived for this many seconds.
        #[arg(long, value_name = "SECS")]
        idle_exit: Option<f64>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show a consumer group's members, slots and lag (every group without NAME)
    #[command(after_help = EXAMPLES_GROUP_STATUS)]
    Status {
        /// The group.
        name: Option<String>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `retro config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Which ed25519 key signs each new checkpoint: set it, generate one, show it or unset it
    #[command(name = "signing-key", after_help = EXAMPLES_CONFIG)]
    SigningKey {
        /// A key file (one line 'retro-ed25519-secret <64 hex digits>').
        #[arg(conflicts_with_all = ["generate", "unset"])]
        path: Option<PathBuf>,
        /// Generate a new key into the depot's signing.key (mode 0600) and sign with it.
        #[arg(long, conflicts_with = "unset")]
        generate: bool,
        /// Stop signing (the key file is left where it is).
        #[arg(long)]
        unset: bool,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `retro bisect …`
#[derive(Debug, Subcommand)]
pub enum BisectCommand {
    /// Run CMD on checkpoints between GOOD and BAD (first parents), halving each time, to find the
    /// first bad one
    #[command(after_help = EXAMPLES_BISECT)]
    Run {
        /// A checkpoint where CMD succeeds (an ancestor of BAD).
        #[arg(long, value_name = "REV")]
        good: String,
        /// A checkpoint where CMD fails.
        #[arg(long, value_name = "REV")]
        bad: String,
        /// The check, after `--`: exit 0 good, 125 skip, anything else bad.
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
}

/// `retro log`
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Where to start (default HEAD).
    pub rev: Option<String>,
    /// One line per checkpoint.
    #[arg(long)]
    pub oneline: bool,
    /// At most N checkpoints.
    #[arg(short = 'n', long = "max-count", value_name = "N")]
    pub max_count: Option<usize>,
    /// Oldest first.
    #[arg(long)]
    pub reverse: bool,
    /// Only checkpoints touching a partition matching this glob.
    #[arg(long, value_name = "GLOB")]
    pub partition: Option<String>,
    /// Every ancestor, not only first parents.
    #[arg(long)]
    pub all_parents: bool,
    /// Every ancestor, drawn as an ASCII graph of the parents (newest first, a checkpoint after
    /// all of its children).
    #[arg(long, conflicts_with_all = ["json", "reverse", "partition"])]
    pub graph: bool,
    /// Only checkpoints whose correlation id is ID.
    #[arg(long = "correlation", value_name = "ID")]
    pub correlation: Option<String>,
    /// Only checkpoints whose command id is ID.
    #[arg(long = "command-id", value_name = "ID")]
    pub command_id: Option<String>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

/// `retro cat-object`
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("mode").args(["kind", "size", "pretty", "batch"])))]
pub struct CatArgs {
    /// The object: an id, a unique prefix, or a revision.
    #[arg(required_unless_present = "batch", conflicts_with = "batch")]
    pub object: Option<String>,
    /// Print the kind.
    #[arg(short = 't')]
    pub kind: bool,
    /// Print the body size in bytes.
    #[arg(short = 's')]
    pub size: bool,
    /// Pretty-print.
    #[arg(short = 'p')]
    pub pretty: bool,
    /// Read names from stdin, print `<id> <kind> <size>` then the raw object for each.
    #[arg(long)]
    pub batch: bool,
}
