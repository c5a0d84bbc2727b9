"""shoal server's settings: flags, SHOAL_* variables and the config file, in that order."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from shoal.cli import config_file
from shoal.cli.main import _parser, _subparser, main
from shoal.cli.ports import PortInUse, check_free
from shoal.cli.server_command import UsageError, settings_from_args
from shoal.cli.settings import NodeSettings, advertise_for, default_route_address
from shoal.mesh import config as mesh_config


def settings(argv: list[str], environ: dict[str, str] | None = None) -> NodeSettings:
    parser = _parser()
    config_file.apply(_subparser(parser, argv[0]), argv[1:], environ or {})
    args = parser.parse_args(argv)
    return settings_from_args(args, argv)


def test_a_flag_wins_over_the_environment_which_wins_over_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "shoal.yaml"
    conf.write_text("data-dir: /var/lib/a\napi-port: 7000\nheartbeat-interval: 5s\n"
                    "runtime: process\nsuper-peer: true\nmesh-preset: wan\nbus: false\n")
    base = ["server", "--config", str(conf)]
    from_file = settings(base)
    assert from_file.data_dir == Path("/var/lib/a") and from_file.api.port == 7000
    assert from_file.agent.heartbeat_interval == 5.0 and from_file.agent.runtime == "process"
    assert from_file.mesh.role == "super" and from_file.bus.enabled is False
    assert from_file.mesh.mesh_config("").probe_interval == mesh_config.wan().probe_interval
    env = {"SHOAL_API_PORT": "7001", "SHOAL_DATA_DIR": "/var/lib/b", "SHOAL_BUS": "yes"}
    from_env = settings(base, env)
    assert (from_env.api.port, from_env.data_dir, from_env.bus.enabled) == (
        7001, Path("/var/lib/b"), True)
    from_flag = settings([*base, "--api-port", "7002"], env)
    assert from_flag.api.port == 7002 and from_flag.data_dir == Path("/var/lib/b")
    # Untouched options keep their defaults.
    assert from_flag.network.cluster_cidr == "10.42.0.0/16"
    assert from_flag.api.idle_timeout is None  # the API server's own default
    timeouts = settings(base, {"SHOAL_API_IDLE_TIMEOUT": "5s", "SHOAL_PEER_IDLE_TIMEOUT": "0"})
    assert (timeouts.api.idle_timeout, timeouts.mesh.idle_timeout) == (5.0, 0.0)


def test_a_weak_peer_renews_its_lease_every_30_s_and_status_is_written_on_change() -> None:
    assert settings(["server", "--data-dir", "/d"]).agent.heartbeat_interval == 10.0
    assert settings(["server", "--data-dir", "/d", "--super-peer"]).agent.heartbeat_interval == 10.0
    assert settings(["server", "--data-dir", "/d", "--sync-via", "super"]).agent.heartbeat_interval == 30.0
    assert settings(["server", "--data-dir", "/d"]).agent.status_report_every is None
    assert settings(["server", "--data-dir", "/d", "--node-status-report-frequency", "5m"]
                    ).agent.status_report_every == 300.0
    assert settings(["server", "--data-dir", "/d", "--sync-via", "super",
                     "--heartbeat-interval", "10s"]
                    ).agent.heartbeat_interval == 10.0


def test_the_config_file_comes_from_shoal_config_too(tmp_path: Path) -> None:
    conf = tmp_path / "shoal.yaml"
    conf.write_text("data_dir: /d\njoin: 10.0.0.1:7443\ntoken: SHOAL1::x\n")
    got = settings(["join"], {"SHOAL_CONFIG": str(conf)})
    assert got.mesh.join == "10.0.0.1:7443" and got.mesh.join_token == "SHOAL1::x"


@pytest.mark.parametrize(("text", "env", "message"), [
    ("apiport: 1\n", {}, "unknown key 'apiport' (did you mean 'api-port'?)"),
    ("api-port: 70000\n", {}, "key 'api-port': 70000 is not a port (1-65535)"),
    ("api-port: [1]\n", {}, "key 'api-port': expected a single value"),
    ("runtime: docker\n", {}, "key 'runtime': 'docker' is not one of auto, process, runc"),
    ("super-peer: maybe\n", {}, "key 'super-peer': expected true or false"),
    ("- a\n", {}, "expected a mapping"),
    ("a: [\n", {}, "not valid YAML"),
    ("", {"SHOAL_PEER_PORT": "-1"}, "SHOAL_PEER_PORT: -1 is not a port (0-65535)"),
    ("", {"SHOAL_HEARTBEAT_INTERVAL": "soon"}, "SHOAL_HEARTBEAT_INTERVAL: invalid duration"),
])
def test_a_bad_value_is_refused_naming_the_key_or_variable(
        tmp_path: Path, text: str, env: dict[str, str], message: str) -> None:
    conf = tmp_path / "shoal.yaml"
    conf.write_text(text)
    with pytest.raises(config_file.ConfigError, match=None) as err:
        settings(["server", "--config", str(conf), "--data-dir", "/d"], env)
    assert message in str(err.value)


def test_the_command_exits_2_naming_the_flag_variable_or_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text("dns-prot: 53\n")
    assert main(["server", "--data-dir", str(tmp_path / "d"), "--config", str(conf)]) == 2
    assert "unknown key 'dns-prot' (did you mean 'dns-port'?)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["server", "--data-dir", str(tmp_path / "d"), "--api-port", "0"])
    assert exit_.value.code == 2
    assert "argument --api-port: 0 is not a port (1-65535)" in capsys.readouterr().err
    assert main(["server", "--config", str(tmp_path / "missing.yaml"), "--data-dir", "/d"]) == 2
    assert "cannot read the config file" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_shoal_join_needs_a_seed_and_a_token() -> None:
    with pytest.raises(UsageError, match="shoal join needs --join"):
        settings(["join", "--data-dir", "/d"])
    with pytest.raises(UsageError, match="--join needs a token"):
        settings(["join", "--data-dir", "/d", "--join", "h:1"])


def test_a_joined_node_starts_without_its_token_file(tmp_path: Path) -> None:
    base = ["server", "--data-dir", str(tmp_path), "--join", "h:1", "--token-file",
            str(tmp_path / "deleted.token")]
    with pytest.raises(UsageError, match="cannot read --token-file"):
        settings(base)
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "node.crt").write_text("joined")
    got = settings(base)
    assert got.mesh.join == "h:1" and got.mesh.join_token is None  # a seed, no second join


def test_a_wildcard_bind_advertises_the_default_routes_address() -> None:
    assert advertise_for("0.0.0.0", "192.0.2.9") == "192.0.2.9"
    assert advertise_for("127.0.0.5", None) is None  # the bind address itself
    found = default_route_address()
    if found is None:
        pytest.skip("this host has no default route")
    assert advertise_for("0.0.0.0", None) == found
    got = settings(["server", "--data-dir", "/d", "--bind", "0.0.0.0"])
    assert got.api.address == found != "127.0.0.1"


def test_a_taken_port_is_refused_naming_the_flag() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse) as err:
            check_free("127.0.0.1", port, "--peer-port")
    assert str(err.value) == f"--peer-port {port}: address already in use (another shoal?)"
    with pytest.raises(PortInUse, match=r"192\.0\.2\.250 is not an address of this host"):
        check_free("192.0.2.250", 6443, "--api-port")
    check_free("127.0.0.1", port, "--api-port")  # free again


def test_a_server_refused_for_a_taken_port_leaves_no_data_dir(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code = main(["server", "--data-dir", str(tmp_path / "new"), "--api-port", str(port)])
    assert code == 1
    assert f"--api-port {port}: address already in use (another shoal?)" in \
        capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_a_mistyped_shoal_variable_is_named_with_the_flag_it_was_likely_meant_for() -> None:
    parser = _subparser(_parser(), "server")
    environ = {"SHOAL_API_PROT": "7000", "SHOAL_API_PORT": "7001", "SHOAL_TOKEN": "t",
               "SHOAL_DEMO_KEEP": "1", "SHOAL_VOLUME_CODE": "/x", "PATH": "/bin"}
    assert config_file.unknown_variables(parser, environ) == [
        "ignoring the environment variable SHOAL_API_PROT: no such flag "
        "(did you mean SHOAL_API_PORT?)"]
