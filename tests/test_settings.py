import json
import os
import subprocess
import sys
from pathlib import Path

import environ
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command

from streams.engine.config import load_redis_config, redact_url

ROOT = Path(__file__).resolve().parent.parent
REDIS_VARS = [
    "REDIS_URL", "REDIS_POOL_MIN", "REDIS_POOL_MAX", "REDIS_POOL_ACQUIRE_TIMEOUT",
    "REDIS_POOL_IDLE_TIMEOUT", "REDIS_POOL_HEALTH_CHECK_INTERVAL", "REDIS_BLOCKING_POOL_MIN",
    "REDIS_BLOCKING_POOL_MAX", "REDIS_BLOCKING_POOL_ACQUIRE_TIMEOUT",
    "REDIS_BLOCKING_POOL_IDLE_TIMEOUT", "REDIS_REGISTRY_REFRESH_INTERVAL",
    "REDIS_REGISTRY_CACHE_EXPIRY", "STREAM_KEY_PREFIX", "STREAM_MAXLEN", "REDIS_CLUSTER", "REDIS_CLUSTER_NODES",
    "PUBLISH_DURABILITY", "PUBLISH_REPLICA_TIMEOUT_MS",
]


@pytest.fixture
def clean_env(monkeypatch):
    for var in REDIS_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_defaults_match_the_seed_plan(clean_env):
    c = load_redis_config(environ.Env())
    assert c.url == "redis://localhost:6379"
    assert (c.pool_min, c.pool_max, c.pool_acquire_timeout_ms, c.pool_idle_timeout_ms) == (2, 10, 5000, 30000)
    assert c.pool_health_check_interval_ms == 15000
    assert (c.blocking_pool_min, c.blocking_pool_max) == (5, 50)
    assert (c.blocking_pool_acquire_timeout_ms, c.blocking_pool_idle_timeout_ms) == (5000, 60000)
    assert (c.registry_refresh_interval_ms, c.registry_cache_expiry_ms) == (30000, 60000)
    assert (c.stream_key_prefix, c.stream_maxlen) == ("stream:", 100000)


def test_values_are_read(clean_env):
    clean_env.setenv("REDIS_POOL_MAX", "20")
    clean_env.setenv("STREAM_MAXLEN", "0")
    c = load_redis_config(environ.Env())
    assert c.pool_max == 20 and c.stream_maxlen == 0
    assert c.cluster == "auto" and c.cluster_nodes == ()
    clean_env.setenv("REDIS_CLUSTER", "False")
    clean_env.setenv("REDIS_CLUSTER_NODES", " 10.0.0.5:6379, redis-2:7000 ")
    c = load_redis_config(environ.Env())
    assert c.cluster == "false" and c.cluster_nodes == ("10.0.0.5:6379", "redis-2:7000")


def test_publish_durability_is_primary_unless_replicated_is_asked(clean_env):
    c = load_redis_config(environ.Env())
    assert (c.publish_durability, c.publish_replica_timeout_ms, c.replica_wait_ms) == ("primary", 1000, None)
    clean_env.setenv("PUBLISH_DURABILITY", "Replicated")
    clean_env.setenv("PUBLISH_REPLICA_TIMEOUT_MS", "4000")
    c = load_redis_config(environ.Env())
    assert (c.publish_durability, c.replica_wait_ms) == ("replicated", 4000)
    assert c.summary()["publish_durability"] == "replicated"


@pytest.mark.parametrize(
    "var,value,needle",
    [
        ("REDIS_POOL_MAX", "ten", "REDIS_POOL_MAX='ten' is not a valid integer"),
        ("REDIS_POOL_MIN", "-1", "REDIS_POOL_MIN='-1' must be >= 0"),
        ("REDIS_POOL_MIN", "11", "REDIS_POOL_MIN=11 is greater than REDIS_POOL_MAX=10"),
        ("REDIS_BLOCKING_POOL_MIN", "51", "REDIS_BLOCKING_POOL_MIN=51 is greater than"),
        ("REDIS_BLOCKING_POOL_MAX", "0", "REDIS_BLOCKING_POOL_MAX='0' must be >= 1"),
        ("REDIS_REGISTRY_REFRESH_INTERVAL", "1.5", "REDIS_REGISTRY_REFRESH_INTERVAL='1.5'"),
        ("REDIS_URL", "http://x", "REDIS_URL"),
        ("STREAM_KEY_PREFIX", "", "STREAM_KEY_PREFIX"),
        ("REDIS_CLUSTER", "maybe", "REDIS_CLUSTER='maybe' must be one of auto, true, false"),
        ("REDIS_CLUSTER_NODES", "10.0.0.5", "REDIS_CLUSTER_NODES: '10.0.0.5' is not host:port"),
        ("REDIS_CLUSTER_NODES", "a:1,b:99999", "REDIS_CLUSTER_NODES: 'b:99999' is not host:port"),
        ("PUBLISH_DURABILITY", "sync", "PUBLISH_DURABILITY='sync' must be one of primary, replicated"),
        ("PUBLISH_REPLICA_TIMEOUT_MS", "0", "PUBLISH_REPLICA_TIMEOUT_MS='0' must be >= 1"),
        ("PUBLISH_REPLICA_TIMEOUT_MS", "4001", "PUBLISH_REPLICA_TIMEOUT_MS='4001' must be <= 4000"),
        ("PUBLISH_REPLICA_TIMEOUT_MS", "1s", "PUBLISH_REPLICA_TIMEOUT_MS='1s' is not a valid integer"),
    ],
)
def test_bad_values_name_the_variable(clean_env, var, value, needle):
    clean_env.setenv(var, value)
    with pytest.raises(ImproperlyConfigured, match=needle.replace("(", r"\(").replace(".", r"\.")):
        load_redis_config(environ.Env())


def run_manage(*args, **env):
    full_env = {k: v for k, v in os.environ.items() if k not in REDIS_VARS}
    full_env.update({"DJANGO_SETTINGS_MODULE": "streamsite.settings", "SECRET_KEY": "x", **env})
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=full_env, capture_output=True, text=True
    )


def test_bad_variable_stops_manage_py_check():
    result = run_manage("check", REDIS_POOL_MAX="lots")
    assert result.returncode != 0
    assert "REDIS_POOL_MAX='lots' is not a valid integer" in result.stderr


BAD_ENVIRONMENTS = [
    ({"SECRET_KEY": "", "DEBUG": "false"}, "SECRET_KEY"),
    ({"DEBUG": "maybe"}, "DEBUG='maybe'"),
    ({"GC_FULL_COLLECT_INTERVAL": "often"}, "GC_FULL_COLLECT_INTERVAL='often' is not a valid integer"),
    ({"GC_THRESHOLDS": "1,2"}, "GC_THRESHOLDS='1,2'"),
    ({"GC_DEEP_COLLECT_INTERVAL": "-1"}, "GC_DEEP_COLLECT_INTERVAL='-1' must be >= 0"),
    ({"OFFLOAD_PROCESSES": "0"}, "OFFLOAD_PROCESSES='0' must be >= 1"),
    ({"OFFLOAD_NICE": "20"}, "OFFLOAD_NICE=20 must be between 0 and 19"),
    ({"PUBLISH_DURABILITY": "all"}, "PUBLISH_DURABILITY='all' must be one of primary, replicated"),
    ({"PUBLISH_REPLICA_TIMEOUT_MS": "5000"}, "PUBLISH_REPLICA_TIMEOUT_MS='5000' must be <= 4000"),
    ({"FD_RESERVE": "lots"}, "FD_RESERVE='lots' is not a valid integer"),
    ({"FD_RESERVE": "-1"}, "FD_RESERVE='-1' must be >= 0"),
    ({"DATABASE_CONNECT_TIMEOUT": "5s"}, "DATABASE_CONNECT_TIMEOUT='5s' is not a valid integer"),
    ({"DATABASE_STATEMENT_TIMEOUT": "0"}, "DATABASE_STATEMENT_TIMEOUT='0' must be >= 1"),
    ({"AUTH_OUTAGE_GRACE": "-1"}, "AUTH_OUTAGE_GRACE='-1' must be >= 0"),
    ({"RIDE_STALE_AFTER": "10s"}, "RIDE_STALE_AFTER='10s' is not a valid integer"),
    ({"RIDE_IDLE_END": "5000"}, "RIDE_IDLE_END=5000 must be more than RIDE_STALE_AFTER=10000"),
    ({"RIDE_AUTO_ARCHIVE": "sometimes"}, "RIDE_AUTO_ARCHIVE='sometimes' is not a boolean"),
    ({"RIDE_ARCHIVED_STREAM": "trash"}, "RIDE_ARCHIVED_STREAM='trash' must be one of keep, delete"),
]


@pytest.mark.parametrize("env,message", BAD_ENVIRONMENTS, ids=[next(iter(env)) + "=" + next(iter(env.values())) for env, _ in BAD_ENVIRONMENTS])
def test_a_bad_variable_stops_start_up_naming_it(env, message):
    result = run_manage("check", **env)
    assert result.returncode != 0 and message in result.stderr


def under_limit(limit: int):
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


def test_a_descriptor_reserve_of_half_the_limit_stops_start_up_naming_it():
    env = {k: v for k, v in os.environ.items() if k not in REDIS_VARS}
    env.update({"DJANGO_SETTINGS_MODULE": "streamsite.settings", "SECRET_KEY": "x", "FD_RESERVE": "128"})
    code = "import django; django.setup(); from django.conf import settings; print(settings.FD_RESERVE)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            preexec_fn=under_limit(256))
    assert result.returncode != 0
    assert "FD_RESERVE=128 must be under half the file descriptor limit (256, ulimit -n)" in result.stderr
    env["FD_RESERVE"] = "127"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            preexec_fn=under_limit(256))
    assert result.stdout.strip() == "127", result.stderr
    del env["FD_RESERVE"]  # the default: a quarter of a limit under 256
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            preexec_fn=under_limit(200))
    assert result.stdout.strip() == "50", result.stderr


def test_full_collections_run_on_their_clock_and_stop():
    from streams.core.gc import FullCollections

    FullCollections.stop()  # importing streamsite.asgi elsewhere in the suite started one
    FullCollections.ran.clear()
    runs = FullCollections.runs
    FullCollections.start(0.01)
    try:
        assert FullCollections.ran.wait(5)
        assert FullCollections.runs > runs and FullCollections.last_pause_ms >= 0
    finally:
        thread = FullCollections._thread
        FullCollections.stop()
    assert not thread.is_alive() and FullCollections._thread is None


def test_clocked_collections_freeze_survivors_and_deep_ones_reclaim_frozen_cycles():
    """A clocked collection freezes what survives it (so the next one skips it); a cycle that
    became garbage after being frozen is reclaimed by the next deep collection only."""
    import gc
    import weakref

    from streams.core.gc import FullCollections

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # a reference cycle, alive for now
    alive = weakref.ref(a)
    try:
        FullCollections.collect_once(deep=False)
        assert gc.get_freeze_count() > 0 and not any(o is a for o in gc.get_objects())  # frozen: skipped
        del a, b  # now garbage, but frozen
        FullCollections.collect_once(deep=False)
        assert alive() is not None
        deep_before = FullCollections.deep_runs
        FullCollections.collect_once(deep=True)
        assert alive() is None and FullCollections.deep_runs == deep_before + 1
    finally:
        gc.unfreeze()  # the rest of the suite's garbage must stay collectable


def test_redact_url():
    assert redact_url("redis://:s3cret@host:6380/1") == "redis://:<redacted>@host:6380/1"
    assert redact_url("redis://user:s3cret@host/0") == "redis://user:<redacted>@host/0"
    assert redact_url("redis://host:6379") == "redis://host:6379"


def test_redis_config_command_redacts_password():
    result = run_manage("redis_config", REDIS_URL="redis://:hunter2@example:6379/3", REDIS_POOL_MAX="12")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert "hunter2" not in result.stdout
    assert shown["url"] == "redis://:<redacted>@example:6379/3"
    assert shown["main_pool"]["max"] == 12


@pytest.mark.django_db
def test_create_api_token_prints_a_working_token(capsys):
    from django.contrib.auth import get_user_model

    from streams.models import ApiToken, hash_token

    get_user_model().objects.create_user("rider")
    call_command("create_api_token", "rider", "--name", "bike")
    raw = capsys.readouterr().out.strip()
    token = ApiToken.objects.get()
    assert token.key_hash == hash_token(raw) and raw not in token.key_hash
    with pytest.raises(Exception, match="no user named 'ghost'"):
        call_command("create_api_token", "ghost")


@pytest.mark.parametrize(
    "var,value,needle",
    [
        ("AUTH_CACHE_TTL", "9000", "AUTH_CACHE_TTL=9000 must be at most 5000"),
        ("ACCESS_RECHECK_INTERVAL", "soon", "ACCESS_RECHECK_INTERVAL='soon' is not a valid integer"),
        ("TRUSTED_PROXIES", "10.0.0.0/33", "TRUSTED_PROXIES is not a list of networks"),
        ("STREAM_MAX_ENTRY_BYTES", "0", "STREAM_MAX_ENTRY_BYTES='0' must be >= 1"),
        ("SECURE_SSL_REDIRECT", "sometimes", "SECURE_SSL_REDIRECT='sometimes' is not a boolean"),
    ],
)
def test_bad_security_settings_stop_start_up(var, value, needle):
    result = run_manage("check", **{var: value})
    assert result.returncode != 0 and needle in result.stderr


def test_check_deploy_is_clean_with_nothing_silenced():
    result = run_manage("check", "--deploy", DEBUG="false", SECRET_KEY="k" * 60 + "-Zq9", ALLOWED_HOSTS="example.com",
                        SECURE_SSL_REDIRECT="")  # the production default (the suite's settings turn it off)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout + result.stderr, result.stderr


@pytest.mark.django_db
def test_create_api_token_scopes_and_expiry(capsys):
    from django.contrib.auth import get_user_model

    from streams.models import ApiToken

    get_user_model().objects.create_user("device")
    call_command("create_api_token", "device", "--scopes", "publish", "--expires-in-days", "30")
    token = ApiToken.objects.get()
    assert token.scopes == "publish" and token.expires_at is not None
    with pytest.raises(Exception, match="scopes must be"):
        call_command("create_api_token", "device", "--scopes", "read,admin")
    with pytest.raises(Exception, match="expires-in-days"):
        call_command("create_api_token", "device", "--expires-in-days", "0")


def test_existing_tokens_migrate_to_every_scope():
    from streams.models import ALL_SCOPES, ApiToken

    assert ApiToken._meta.get_field("scopes").default == ALL_SCOPES == "read,publish,manage"


def test_importing_the_settings_loads_no_models_metrics_or_redis_client():
    """The settings read the environment and nothing more (`.importlinter` states the same for
    the code; this checks what a real import pulls in)."""
    probe = (
        "import sys; import streamsite.settings; "
        "loaded = [m for m in ('prometheus_client', 'redis', 'django.db.models', 'streams.models', "
        "'workouts.models', 'streams.core.instruments') if m in sys.modules]; print(loaded)"
    )
    env = {**os.environ, "SECRET_KEY": "x", "DEBUG": "false"}
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_database_connections_get_the_timeouts_of_the_environment():
    result = run_manage(
        "shell", "-c", "from django.conf import settings; print(settings.DATABASES['default']['OPTIONS'])",
        DATABASE_URL="postgresql://db.invalid/streamsite", DATABASE_CONNECT_TIMEOUT="3500", DATABASE_STATEMENT_TIMEOUT="750",
    )
    assert result.returncode == 0, result.stderr
    assert "{'connect_timeout': 4, 'options': '-c statement_timeout=750'}" in result.stdout
