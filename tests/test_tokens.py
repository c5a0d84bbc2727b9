"""Join tokens: made, listed, revoked and spent on a signer; and how `shoal server` takes one."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from shoal.mesh import join
from shoal.mesh.join_tokens import (
    TokenError,
    check_token,
    create_token,
    list_tokens,
    parse_token,
    revoke_token,
    spend_token,
    tokens_path,
)
from shoal.mesh.pki import NodePKI, ca_hash
from tests.conftest import VENV_BIN


def signer_pki(dir: Path) -> NodePKI:
    p = NodePKI(dir / "pki")
    join.prepare_pki(p, "a", ["127.0.0.1"])
    return p


def shoal_cli(*args: str, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "shoal"), *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


def test_a_token_carries_the_ca_hash_and_only_a_hash_of_its_secret_is_stored(
        tmp_path: Path) -> None:
    p = signer_pki(tmp_path)
    token = create_token(p, ttl=60)
    assert token.ca_hash == ca_hash(p.ca_cert.read_bytes())
    assert parse_token(str(token)) == token
    stored = tokens_path(p).read_text()
    assert token.secret not in stored and token.id in stored
    assert oct(tokens_path(p).stat().st_mode & 0o777) == "0o600"
    check_token(p, str(token))


@pytest.mark.parametrize("mangle, message", [
    (lambda t: t[:-1] + ("x" if t[-1] != "x" else "y"), "not valid"),
    (lambda t: t.replace(".", ".zz", 1), "not valid"),
    (lambda t: "garbage", "malformed"),
    (lambda t: t.replace("sha256:", "sha256:00", 1), "another cluster"),
], ids=["wrong-secret", "unknown-id", "malformed", "foreign-ca"])
def test_a_wrong_token_is_refused_with_a_reason(tmp_path: Path, mangle: object,
                                                message: str) -> None:
    p = signer_pki(tmp_path)
    token = str(create_token(p, ttl=60))
    with pytest.raises(TokenError, match=message):
        check_token(p, mangle(token))  # type: ignore[operator]


def test_an_expired_token_is_refused_and_says_when_it_expired(tmp_path: Path) -> None:
    p = signer_pki(tmp_path)
    token = str(create_token(p, ttl=10, now=1000.0))
    check_token(p, token, now=1005.0)
    with pytest.raises(TokenError, match="expired at 1970-01-01T00:16:50"):
        check_token(p, token, now=1011.0)


def test_a_token_is_single_use_by_default_and_gone_once_spent(tmp_path: Path) -> None:
    p = signer_pki(tmp_path)
    token = str(create_token(p))
    assert spend_token(p, token) == 0
    with pytest.raises(TokenError, match="not valid"):
        spend_token(p, token)
    assert list_tokens(p) == []


def test_a_token_with_three_uses_admits_three_joins_and_counts_down(tmp_path: Path) -> None:
    p = signer_pki(tmp_path)
    token = str(create_token(p, uses=3))
    assert [spend_token(p, token) for _ in range(3)] == [2, 1, 0]
    with pytest.raises(TokenError):
        check_token(p, token)


def test_a_revoked_token_is_refused(tmp_path: Path) -> None:
    p = signer_pki(tmp_path)
    token = create_token(p, uses=5)
    revoke_token(p, token.id)
    with pytest.raises(TokenError, match="not valid"):
        check_token(p, str(token))
    with pytest.raises(TokenError, match="no join token with id"):
        revoke_token(p, token.id)


def test_token_create_prunes_expired_tokens(tmp_path: Path) -> None:
    p = signer_pki(tmp_path)
    old = create_token(p, ttl=1, now=0.0)
    create_token(p, ttl=60)
    assert old.id not in json.loads(tokens_path(p).read_text())


def test_a_node_that_cannot_sign_makes_no_token(tmp_path: Path) -> None:
    p = signer_pki(tmp_path)
    p.ca_key.unlink()
    with pytest.raises(TokenError, match="holds no CA key"):
        create_token(p)


# -- the command ---------------------------------------------------------------------------


def test_token_list_shows_id_uses_left_expiry_and_creation_and_revoke_removes_it(
        tmp_path: Path) -> None:
    signer_pki(tmp_path)
    made = shoal_cli("token", "create", "--data-dir", str(tmp_path), "--uses", "3",
                     "--ttl", "1h")
    assert made.returncode == 0, made.stderr
    token = parse_token(made.stdout)
    listed = shoal_cli("token", "list", "--data-dir", str(tmp_path)).stdout.splitlines()
    assert listed[0].split() == ["TOKEN", "ID", "USES", "LEFT", "EXPIRES", "CREATED"]
    assert listed[1].split()[:2] == [token.id, "3"]
    assert token.secret not in "\n".join(listed)
    r = shoal_cli("token", "revoke", "--data-dir", str(tmp_path), token.id)
    assert r.returncode == 0 and token.id in r.stdout
    assert len(shoal_cli("token", "list", "--data-dir", str(tmp_path)).stdout.splitlines()) == 1


def test_token_create_on_a_node_that_cannot_sign_fails_and_says_where_to_run_it(
        tmp_path: Path) -> None:
    p = signer_pki(tmp_path)
    p.ca_key.unlink()
    r = shoal_cli("token", "create", "--data-dir", str(tmp_path))
    assert r.returncode == 1 and r.stdout == ""
    assert "create tokens on a signer" in r.stderr


def test_server_refuses_a_join_without_a_token_and_reads_one_from_a_file_or_the_environment(
        tmp_path: Path) -> None:
    from shoal.cli import main
    from shoal.cli.server_command import join_token

    base = ["server", "--data-dir", str(tmp_path / "d"), "--join", "127.0.0.1:1"]
    args = main._parser().parse_args(base)
    os.environ.pop("SHOAL_TOKEN", None)
    assert join_token(args, base) is None
    (tmp_path / "t").write_text("SHOAL1::sha256:ab::id.secret\n")
    args = main._parser().parse_args([*base, "--token-file", str(tmp_path / "t")])
    assert join_token(args, base) == "SHOAL1::sha256:ab::id.secret"
    r = shoal_cli(*base, "--name", "n")
    assert r.returncode == 2 and "--token-file" in r.stderr
    assert not (tmp_path / "d" / "pki").exists()


def test_a_token_on_the_command_line_is_warned_about_and_the_environment_is_not(
        tmp_path: Path) -> None:
    base = ["server", "--name", "n", "--data-dir", str(tmp_path / "d"), "--api-port", "1",
            "--peer-port", "0", "--join", "127.0.0.1:1", "--join-timeout", "0"]
    on_line = shoal_cli(*base, "--token", "SHOAL1::sha256:ab::id.secret")
    assert "warning: --token shows the join token in `ps`" in on_line.stderr
    from_env = shoal_cli(*base, env={"SHOAL_TOKEN": "SHOAL1::sha256:ab::id.secret"})
    assert "warning" not in from_env.stderr
    # Both got as far as dialling the (absent) peer with the token.
    for r in (on_line, from_env):
        assert r.returncode == 1 and "cannot join through 127.0.0.1:1" in r.stderr


def test_a_token_redirected_to_a_file_is_written_0600(tmp_path: Path) -> None:
    signer_pki(tmp_path)
    out = tmp_path / "join.token"
    with open(out, "w") as f:
        os.fchmod(f.fileno(), 0o644)
        subprocess.run([str(VENV_BIN / "shoal"), "token", "create", "--data-dir", str(tmp_path)],
                       stdout=f, check=True, timeout=60)
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    parse_token(out.read_text())
