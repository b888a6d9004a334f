"""ssl.principal.mapping.rules: Kafka's rules from a client certificate's subject to the
principal, parsed and applied as Kafka's SslPrincipalMapper does, and used for the ACLs of a
real SSL client (confluent-kafka with a client certificate)."""
from __future__ import annotations

import logging
import os
import socket
import ssl
import struct

import pytest
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from ringlog.broker.config import BrokerConfig, apply_settings
from ringlog.broker.security.principal_rules import NoMatchingRule, RuleError, parse_rules, principal_for
from ringlog.broker.testing import BrokerThread
from ringlog.storage.configdef import SettingError

from . import clients
from .conftest import PASSWORD, USER, address, secured_config


@pytest.mark.parametrize("rules", [
    "DEFAULT", "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/", "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L, DEFAULT",
    "RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/", "RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L",
    "RULE:^cn=(.?),ou=(.?),dc=(.?),dc=(.?)$/$1@$2/U", "RULE:^CN=([^,ADEFLTU,]+)(,.*|$)/$1/", "", ", , ,",
])
def test_kafka_valid_rules(rules):
    parse_rules(rules)


@pytest.mark.parametrize("rules", [
    "default", "DEFAUL", "DEFAULT/L", "DEFAULT/U", "RULE:CN=(.*?),OU=ServiceUsers.*/$1",
    "rule:^CN=(.*?),OU=ServiceUsers.*$/$1/", "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L/U",
    "RULE:^CN=(.*?),OU=ServiceUsers.*$/L", "RULE:^CN=(.*?),OU=ServiceUsers.*$/LU", "RULE:^CN=(($/$1/",
])
def test_kafka_invalid_rules(rules):
    with pytest.raises(RuleError):
        parse_rules(rules)


def test_rules_apply_in_order_as_kafka_does():
    rules = parse_rules("RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L, RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),"
                        "C=(.*?)$/$1@$2/L, RULE:^cn=(.*?),ou=(.*?),dc=(.*?),dc=(.*?)$/$1@$2/U, "
                        "RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/U, DEFAULT")
    assert principal_for(rules, "CN=Duke,OU=ServiceUsers,O=Org,C=US") == "duke"
    assert principal_for(rules, "CN=Duke,OU=SME,O=mycp,L=Fulton,ST=MD,C=US") == "duke@sme"
    assert principal_for(rules, "cn=duke,ou=sme,dc=mycp,dc=com") == "DUKE@SME"
    assert principal_for(rules, "cN=duke,OU=JavaSoft,O=Sun Microsystems") == "DUKE"
    assert principal_for(rules, "OU=JavaSoft,O=Sun Microsystems,C=US") == "OU=JavaSoft,O=Sun Microsystems,C=US"
    # an escaped comma inside the CN, and a back reference past the groups there are ($23: $2, "3")
    assert principal_for(parse_rules(r"RULE:^CN=((\\, *|\w)+)(,.*|$)/$1/,DEFAULT"),
                         r"CN=Tkac\, Adam,OU=ITZ,DC=geodis,DC=cz") == r"Tkac\, Adam"
    assert principal_for(parse_rules("RULE:^CN=(.*?),OU=(.*?)$/$1@$23/"), "CN=a,OU=b") == "a@b3"
    with pytest.raises(NoMatchingRule):
        principal_for(parse_rules("RULE:^CN=admin,.*$/admin/"), "CN=bob,O=x")


def test_a_bad_rule_is_a_one_line_config_error():
    with pytest.raises(SettingError, match="ssl.principal.mapping.rules") as info:
        apply_settings(BrokerConfig(), {"ssl.principal.mapping.rules": "RULE:^CN=(.*?)/$1/X"})
    assert "unmatched substring `X`" in str(info.value) and "\n" not in str(info.value)


def _mtls(pki) -> dict:
    settings = clients.confluent_settings("SSL", pki, None, USER, PASSWORD)
    settings.update({"ssl.certificate.location": pki.client_cert, "ssl.key.location": pki.client_key})
    return settings


def test_acls_name_the_mapped_principal(tmp_path, pki):
    """The client certificate's subject is CN=client-app,O=ringlog tests; the rule makes it
    User:CLIENT-APP, which is the only principal the ACLs allow."""
    data_dir = str(tmp_path / "data")
    os.makedirs(data_dir)
    config = secured_config(data_dir, pki, ssl_client_auth="required", authorizer_enabled=True,
                            super_users="User:ANONYMOUS",
                            ssl_principal_mapping_rules="RULE:^CN=([^,]*),O=.*$/$1/U, DEFAULT")
    with BrokerThread(config) as b:
        admin = AdminClient({"bootstrap.servers": address(b, "PLAINTEXT")})  # User:ANONYMOUS, a super user
        admin.create_topics([NewTopic("mapped", 1, 1)])["mapped"].result(10)
        for rtype, name in ((ResourceType.TOPIC, "mapped"), (ResourceType.GROUP, "g")):
            binding = AclBinding(rtype, name, ResourcePatternType.LITERAL, "User:CLIENT-APP", "*", AclOperation.ALL,
                                 AclPermissionType.ALLOW)
            for f in admin.create_acls([binding]).values():
                f.result(10)
        assert clients.confluent_round_trip(address(b, "SSL"), "mapped", _mtls(pki)) == clients.RECORDS


def test_a_subject_no_rule_applies_to_fails_authentication(tmp_path, pki, caplog):
    caplog.set_level(logging.INFO, logger="ringlog.security")
    config = secured_config(str(tmp_path / "data"), pki, ssl_client_auth="required",
                            ssl_principal_mapping_rules="RULE:^CN=admin,.*$/admin/")
    with BrokerThread(config) as b:
        host, port = address(b, "SSL").split(":")
        context = ssl.create_default_context(cafile=pki.ca)
        context.load_cert_chain(pki.client_cert, pki.client_key)
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                # ApiVersions v0: the broker closes instead of answering
                body = struct.pack(">hhih", 18, 0, 1, -1)
                try:
                    tls.sendall(struct.pack(">i", len(body)) + body)
                    answer = tls.recv(4)
                except (ssl.SSLError, ConnectionError):
                    answer = b""
                assert answer == b""
        assert "no rule of ssl.principal.mapping.rules applies to CN=client-app,O=ringlog tests" in caplog.text
