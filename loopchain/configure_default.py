"""Every configuration key with its default value (the lowest configuration layer).

Keys are UPPERCASE module constants. `loopchain.configure.load_config` overlays
`loopchain/configure_user.py`, environment variables and a JSON file (`-o`) on top.
Times are in seconds unless the name says otherwise.
"""

# Network
IP_LOCAL = "127.0.0.1"
LOOPCHAIN_HOST = "127.0.0.1"  # host other nodes use to reach this one
PORT_PEER = 7100
PORT_RADIOSTATION = 7102
IP_RADIOSTATION = "127.0.0.1"
RADIOSTATION_STANDBY_TARGET = ""  # "host:port" of a standby RadioStation, or empty
PORT_DIFF_REST_SERVICE_CONTAINER = 1900
PORT_DIFF_INNER_SERVICE = 10000
GRPC_TIMEOUT = 5.0
GRPC_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
ENABLE_REST_SSL = 0
REST_MAX_BODY_BYTES = 512 * 1024
RUN_REST_PROXY = True  # peer.py starts rest_proxy.py as a child

# Channels
LOOPCHAIN_DEFAULT_CHANNEL = "loopchain_default"
CHANNEL_MANAGE_DATA_PATH = "channel_manage_data.json"
ENABLE_CHANNEL_AUTH = False
# Where a peer runs its channels: "auto" runs each in a worker process of its own (its own event
# loop, links and core, as ICON's loopchain did) when the peer serves two channels or more and
# may use a core per channel and one more; else in the peer's process (a lone channel, or
# channels that would only take turns on the same cores, gain nothing from a process and a hop
# each). "always" runs a worker per channel, one channel too; "never" never.
CHANNEL_WORKERS = "auto"

# Storage
DEFAULT_STORAGE_PATH = ".storage"

# SCORE
DEFAULT_SCORE_REPOSITORY_PATH = "score"
DEFAULT_SCORE_PACKAGE = "loopchain/default"
DEFAULT_SCORE_BRANCH = "master"
ALLOW_LOAD_SCORE_IN_DEVELOP = False
SCORE_QUERY_TIMEOUT = 3.0
SCORE_INVOKE_TIMEOUT = 10.0
SCORE_STEP_LIMIT = 1_000_000  # Python line events one transaction or query may run (deterministic)
SCORE_MEMORY_LIMIT_MB = 1024  # address-space limit of a SCORE process
SCORE_RESTART_BACKOFF_MAX = 5.0

# Consensus
VOTING_RATIO = 0.67  # loopchain's spelling of 2/3 (more than 2/3: 2f+1); up to 0.67 is 2/3
LEADER_COMPLAIN_RATIO = 0.51
INTERVAL_BLOCKGENERATION = 0.2
MAX_BLOCK_TX_NUM = 1000
MAX_BLOCK_KBYTES = 1024
LEADER_BLOCK_CREATION_LIMIT = 20
TIMEOUT_FOR_LEADER_COMPLAIN = 1.0
MAX_TIMEOUT_FOR_LEADER_COMPLAIN = 8.0
BLOCK_VOTE_TIMEOUT = 2.0
MAX_TIMESTAMP_SKEW = 30.0
SYNC_BATCH_BLOCKS = 100

# Transactions
MAX_TX_COUNT_IN_ADDTX_LIST = 128
SEND_TX_LIST_DURATION = 0.2  # the most a gossip batch waits to fill under load
TPS_LIMIT_PER_SEC = 0  # 0: no limit
# The pool's bounds (and TX_POOL_MAX_BYTES) are shared by the channel's writers, the peers that
# take transactions from clients: each holds at most 1/writers of them (mempool.writer_of).
TX_POOL_MAX = 50000
# Admission control: a peer takes new transactions from clients while its pool holds fewer than
# TX_POOL_ADMIT_MAX of its own, and refuses them while a backlog of its own builds up:
# TX_POOL_ADMIT_BACKLOG or more wait for a block and the oldest of them has waited
# TX_POOL_ADMIT_WAIT seconds (or a certified round's time here, if longer: peers far apart).
# Refused clients get 503 with Retry-After (gRPC RESOURCE_EXHAUSTED) at once, so a backlog never
# grows into waiting times, on a fast machine or a slow one. Relayed transactions are still
# pooled up to their writer's share.
TX_POOL_ADMIT_MAX = 2000
TX_POOL_ADMIT_BACKLOG = 150
# Longer than a healthy wait: a transaction that comes just after a proposal waits a whole
# interval (0.2 s) and the next proposal's trip; at 0.2 s the rule refused clients at every
# block under a load the peers could carry (64 clients: ~20 % fewer transactions, 1,100 503s).
TX_POOL_ADMIT_WAIT = 0.5
# calls a REST proxy has open to its peer, submissions and other calls (reads, status) each; more
# are answered 503 at once
REST_MAX_INFLIGHT = 256
# a REST connection that sends no request for this long (from its opening, or since its last
# answer) is closed: idle clients and half-sent request heads do not hold sockets for good
REST_KEEPALIVE_TIMEOUT = 75.0
# a request body not received in full within this is answered 408 and its connection closed
REST_BODY_TIMEOUT = 30.0
# a REST connection whose client takes none of its answer for this long is dropped (checked this
# often: within twice that), so a client that does not read holds no answer in the server for good
REST_SEND_TIMEOUT = 20.0
# bytes of answers a REST server (proxy or RadioStation) holds written but not yet taken by their
# clients; beyond them an answer over 16 KiB is answered 503 with Retry-After instead
REST_MAX_SENDING_MB = 64
# bytes of request bodies over 16 KiB a REST server (proxy or RadioStation) receives and handles
# at once (a body in chunks counts as REST_MAX_BODY_BYTES); beyond them such a request is answered
# 503 with Retry-After, its body unread, and its connection closed
REST_MAX_RECEIVING_MB = 64
# a process (peer, channel worker, REST proxy, RadioStation, SCORE) whose allocator holds this many
# MB freed gives them back to the system (looked at every 10 s; glibc keeps what a burst freed
# otherwise: a proxy kept 600 MB, 11 in use, after 256 clients posted at once); 0: never
MEMORY_GIVE_BACK_MB = 32
# a peer's child (its REST proxy, a channel worker) that gives no sign of life for this many
# seconds (its event loop blocked or deadlocked, the process stopped) is killed and started
# again; 0: never. At least MIN_CHILD_HANG_TIMEOUT: a busy child must not be taken for hung
CHILD_HANG_TIMEOUT = 30.0
# connections a REST port (proxy or RadioStation) keeps open at once; a new one beyond them is
# answered 503 and closed. Lowered at start when the process may not open that many files.
REST_MAX_CONNECTIONS = 4096
MAX_TX_BYTES = 64 * 1024  # a transaction's canonical bytes; at most MAX_BLOCK_KBYTES
# the memory a channel's pooled transactions hold, estimated from their bytes (a parsed body holds
# 2-25 times its size): 50,000 ordinary ones count ~160 MB (they hold ~90)
TX_POOL_MAX_BYTES = 256 * 1024 * 1024
TX_TIMESTAMP_WINDOW = 300.0  # seconds a pooled transaction's timestamp may lie from the clock
# Durable intake: a client's transaction is synced to the channel's intake log before the peer
# answers "accepted", so kill -9 or power loss right after the answer loses nothing (off: the
# answer comes after an in-memory pool add, faster and lost in a crash). Group commit keeps the
# cost to one sync per batch of concurrent submissions.
INTAKE_LOG = True
# Free space a peer keeps for its blocks: below it, new client transactions get 503 (the chain
# goes on); a block store write that fails anyway stops the peer with a clear error, intact.
STORAGE_MIN_FREE_MB = 64
# Snappy compression of each channel's block store (LevelDB). Off: blocks (hex hashes and
# signatures) shrink only ~1.4x, and compressing every table LevelDB writes and rewrites while it
# compacts was ~11-27% of a peer's CPU under load. On: ~30% less disk for that CPU. A store reads
# tables written either way.
LEVELDB_COMPRESSION = False
# The block store's LevelDB sizes (MB): what it gathers in memory before writing a table (LevelDB's
# default is 4), and the size of its tables (default 2). Against LevelDB's, a peer whose store had
# grown for four minutes under 64 clients rewrote 7 instead of 22 KB per transaction compacting,
# for ~6 % less of its CPU; the price is memory after writes (~12 MB more per peer after that load:
# the buffer fills up to its size) and a start-up that reads back what the buffer held.
LEVELDB_WRITE_BUFFER_MB = 16
LEVELDB_MAX_FILE_MB = 8

# ICON JSON-RPC v3 (POST /api/v3 on the REST proxy)
# The network id the JSON-RPC v3 API reports (icx_getNetworkInfo "nid"): "0x" + lowercase hex,
# no leading zeros. ICON uses 0x1 for its main network; 0x3 is the usual id of a local network.
ICON_NID = "0x3"

# RadioStation
HEARTBEAT_INTERVAL = 2.0
HEARTBEAT_TIMEOUT = 10.0
# A registering peer must sign a fresh challenge at its target (its key answers there) before it
# joins a channel; off only where the RadioStation cannot reach its peers.
RADIOSTATION_CHECK_TARGETS = True
# The operator token file (Authorization: Bearer for POST /conf, certificates, peer removal); empty
# means {DEFAULT_STORAGE_PATH}/radiostation_{port}/admin_token. Created 0600 on first start.
RADIOSTATION_ADMIN_TOKEN_PATH = ""

# Logging and monitoring
LOOPCHAIN_LOG_LEVEL = "INFO"
LOG_FILE_PATH = ""
# Where the records go, as in ICON's loopchain: "console" (stderr; no LOG_FILE_PATH), "file"
# (LOG_FILE_PATH alone: stderr keeps what is not a record, such as a crash before logging starts,
# and the records the file refuses) or "console|file" (both; the file when LOG_FILE_PATH is set).
LOG_OUTPUT_TYPE = "console|file"
# LOG_FILE_PATH rotates, as in loopchain: by time when LOG_FILE_ROTATE_WHEN is set ("S", "M", "H",
# "D", "midnight" or "W0".."W6", every LOG_FILE_ROTATE_INTERVAL of them), otherwise by size at
# LOG_FILE_ROTATE_MAX_BYTES (0: never, the file grows without bound); LOG_FILE_ROTATE_BACKUP_COUNT
# old files are kept. Unlike loopchain's, the default is bounded: a busy peer logs every block.
LOG_FILE_ROTATE_WHEN = ""
LOG_FILE_ROTATE_INTERVAL = 1
LOG_FILE_ROTATE_MAX_BYTES = 64 * 1024 * 1024
LOG_FILE_ROTATE_BACKUP_COUNT = 10
LOG_FILE_ROTATE_UTC = False
MONITOR_LOG = False
MONITOR_LOG_HOST = "127.0.0.1"
MONITOR_LOG_PORT = 24224

# gRPC TLS between nodes (0: none; 2: mutual TLS with certificates of the channel's CA).
# Empty paths mean the node's own TLS folder: {DEFAULT_STORAGE_PATH}/<node>/tls/{ca,cert,key}.pem.
# A password-protected key takes its password from the environment (LOOPCHAIN_TLS_KEY_PASSWORD),
# never from configuration (the RadioStation serves its configuration over REST).
GRPC_SSL_TYPE = 0
GRPC_SSL_CA_CERT_PATH = ""
GRPC_SSL_CERT_PATH = ""
GRPC_SSL_KEY_PATH = ""
GRPC_SSL_REVOKED_PATH = ""  # JSON list of revoked certificate serial numbers (or a CRL PEM)
GRPC_SSL_SERVER_NAME_RADIOSTATION = "loopchain-radiostation"
