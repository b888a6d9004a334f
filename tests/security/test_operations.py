"""Operating a secured broker: certificates reloaded on SIGHUP, configuration mistakes refused
in one line, `ringlog users` and `ringlog acls` on a stopped broker's data dir."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl

import pytest

from ringlog.broker.config import BrokerConfig, ConfigError, apply_settings, validate
from ringlog.broker.testing import BrokerProcess
from ringlog.client.cli import main

from .certs import CA


def _served_subject(host: str, port: int, ca: str) -> str:
    context = ssl.create_default_context(cafile=ca)
    with socket.create_connection((host, port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            return dict(x[0] for x in tls.getpeercert()["subject"])["commonName"]


def test_sighup_reloads_the_certificate(tmp_path):
    ca = CA.create(str(tmp_path))
    cert, key = ca.issue(str(tmp_path), "first")
    live_cert, live_key = str(tmp_path / "live.crt"), str(tmp_path / "live.key")
    shutil.copy(cert, live_cert)
    shutil.copy(key, live_key)
    config = tmp_path / "broker.toml"
    config.write_text(f'listeners = "SSL://127.0.0.1:0"\n"ssl.certificate.location" = "{live_cert}"\n'
                      f'"ssl.key.location" = "{live_key}"\n')
    with BrokerProcess(str(tmp_path / "data"), "--config", str(config)) as b:
        assert _served_subject(b.host, b.port, ca.path) == "first"
        cert2, key2 = ca.issue(str(tmp_path), "second")
        shutil.copy(cert2, live_cert)
        shutil.copy(key2, live_key)
        b.proc.send_signal(signal.SIGHUP)
        b.wait_line("TLS certificates reloaded")
        assert _served_subject(b.host, b.port, ca.path) == "second"
        # a broken file keeps the certificate in use, and says why
        with open(live_key, "w") as f:
            f.write("not a key")
        b.proc.send_signal(signal.SIGHUP)
        b.wait_line("TLS reload failed, keeping the certificate in use")
        assert _served_subject(b.host, b.port, ca.path) == "second"


@pytest.mark.parametrize("settings,expected", [
    ({"listeners": "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0"}, "needs ssl.certificate.location"),
    ({"listeners": "CLIENT://127.0.0.1:0"}, "CLIENT is neither a security protocol"),
    ({"listeners": "PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9092"}, "port 9092 is used twice"),
    ({"listeners": "PLAINTEXT://127.0.0.1:0", "advertised.listeners": "SSL://h:1"}, "SSL is not one of the listeners"),
    ({"listeners": "PLAINTEXT://127.0.0.1:0", "ssl.client.auth": "required"}, "needs ssl.ca.location"),
])
def test_security_config_mistakes_are_one_line(settings, expected):
    with pytest.raises(ConfigError) as info:
        validate(apply_settings(BrokerConfig(), settings))
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_bad_listener_values_are_refused_when_read():
    from ringlog.storage.configdef import SettingError

    with pytest.raises(SettingError, match="listeners"):
        apply_settings(BrokerConfig(), {"listeners": "PLAINTEXT//nohost"})
    with pytest.raises(SettingError, match="listener.security.protocol.map"):
        apply_settings(BrokerConfig(), {"listener.security.protocol.map": "CLIENT:TLS"})
    config = apply_settings(BrokerConfig(), {"listeners": ["CLIENT://:0", "PLAINTEXT://127.0.0.1:0"],
                                             "listener.security.protocol.map": "CLIENT:SASL_PLAINTEXT",
                                             "advertised.listeners": "CLIENT://broker.example:9093"})
    assert validate(config) is config


def test_users_and_acls_cli_on_a_data_dir(tmp_path, capsys):
    d = str(tmp_path / "data")
    assert main(["users", "add", "alice", "--mechanism", "SCRAM-SHA-512", "--password", "pw", "--data-dir", d]) == 0
    assert main(["users", "list", "--data-dir", d, "--json"]) == 0
    out = capsys.readouterr().out
    assert '"SCRAM-SHA-512"' in out and "pw" not in out.split("credentials set")[-1]
    from ringlog.broker.security.store import Credentials

    assert Credentials.load(d).scram("alice", "SCRAM-SHA-512").iterations == 4096
    assert main(["users", "add", "bob", "--mechanism", "PLAIN", "--data-dir", d]) == 2  # no password
    assert "a password is needed" in capsys.readouterr().err
    assert main(["users", "delete", "nobody", "--data-dir", d]) == 1
    assert main(["acls", "add", "--data-dir", d, "--allow-principal", "User:alice", "--operation", "Read",
                 "--topic", "orders-", "--prefixed"]) == 0
    assert main(["acls", "add", "--data-dir", d, "--allow-principal", "User:alice", "--operation", "Fly",
                 "--topic", "x"]) == 2
    capsys.readouterr()
    assert main(["acls", "list", "--data-dir", d, "--json"]) == 0
    assert '"PREFIXED"' in capsys.readouterr().out
    assert main(["acls", "remove", "--data-dir", d, "--topic", "orders-", "--prefixed"]) == 0
    assert main(["acls", "remove", "--data-dir", d, "--topic", "orders-", "--prefixed"]) == 1
    # a running broker holds the data dir: offline changes are refused
    with BrokerProcess(d):
        assert main(["users", "add", "carol", "--mechanism", "PLAIN", "--password", "x", "--data-dir", d]) == 1
        assert "in use by a running broker" in capsys.readouterr().err
    assert os.path.exists(os.path.join(d, "security", "credentials.json"))
