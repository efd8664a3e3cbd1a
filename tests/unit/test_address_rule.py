"""The address rule: which addresses and names hooks may reach, and the setting that allows more."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from lambda_rollouts.settings import Settings
from lambda_rollouts.tenancy import AddressRule

LOOPBACK_ALLOWED = AddressRule.allowing([ip_network("127.0.0.0/8"), ip_network("::1/128")])


@pytest.mark.parametrize(
    ("address", "refused_as"),
    [
        # IPv4.
        (
            "169.254.169.254",
            "link-local (169.254.0.0/16), where cloud metadata and credential services answer",
        ),
        ("169.254.170.2", "link-local (169.254.0.0/16), where cloud metadata and credential services answer"),
        ("127.0.0.1", "loopback (127.0.0.0/8)"),
        ("127.255.255.254", "loopback (127.0.0.0/8)"),
        ("0.0.0.0", "'this host' (0.0.0.0/8), which reaches the operator's own host"),
        ("100.100.100.200", "Alibaba Cloud's metadata service"),
        # IPv6.
        ("::1", "loopback (::1)"),
        ("::", "the unspecified address (::), which reaches the operator's own host"),
        ("fe80::1", "link-local (fe80::/10)"),
        ("fe80::1%eth0", "link-local (fe80::/10)"),
        ("febf:ffff::1", "link-local (fe80::/10)"),
        ("fd00:ec2::254", "the EC2 instance metadata service"),
        ("FD00:EC2:0:0:0:0:0:254", "the EC2 instance metadata service"),
        ("fd00:ec2::23", "the EKS Pod Identity agent"),
        # IPv4-mapped IPv6 addresses are judged as the IPv4 address they map.
        (
            "::ffff:169.254.169.254",
            "link-local (169.254.0.0/16), where cloud metadata and credential services answer",
        ),
        (
            "::ffff:a9fe:a9fe",
            "link-local (169.254.0.0/16), where cloud metadata and credential services answer",
        ),
        ("::ffff:127.0.0.1", "loopback (127.0.0.0/8)"),
        ("::ffff:0.0.0.0", "'this host' (0.0.0.0/8), which reaches the operator's own host"),
        # Whatever is not an address is never reached.
        ("not-an-address", "not an IP address"),
        # Public and private networks are hooks' own ground.
        ("93.184.215.14", None),
        ("10.0.0.7", None),
        ("172.16.5.4", None),
        ("192.168.1.1", None),
        ("169.253.255.255", None),
        ("169.255.0.0", None),
        ("128.0.0.1", None),
        ("2001:db8::1", None),
        ("fd00:ec2::253", None),
        ("fec0::1", None),
        ("::ffff:10.0.0.7", None),
    ],
)
def test_what_the_rule_refuses(address: str, refused_as: str | None) -> None:
    assert AddressRule().refused_as(address) == refused_as


@pytest.mark.parametrize(
    ("rule", "address", "allowed"),
    [
        (LOOPBACK_ALLOWED, "127.0.0.1", True),
        (LOOPBACK_ALLOWED, "127.3.2.1", True),
        (LOOPBACK_ALLOWED, "::1", True),
        # An allowance for an IPv4 network covers its IPv4-mapped form too.
        (LOOPBACK_ALLOWED, "::ffff:127.0.0.1", True),
        # And no further than it says.
        (LOOPBACK_ALLOWED, "169.254.169.254", False),
        (LOOPBACK_ALLOWED, "::ffff:169.254.169.254", False),
        (LOOPBACK_ALLOWED, "fd00:ec2::254", False),
        (AddressRule.allowing([ip_network("169.254.170.2/32")]), "169.254.170.2", True),
        (AddressRule.allowing([ip_network("169.254.170.2/32")]), "169.254.169.254", False),
        (AddressRule.allowing([ip_network("::1/128")]), "127.0.0.1", False),
    ],
)
def test_allowed_networks_open_exactly_what_they_hold(rule: AddressRule, address: str, allowed: bool) -> None:
    assert (rule.refused_as(address) is None) is allowed


def test_a_refusal_says_what_was_refused_why_and_what_allows_it() -> None:
    rule = AddressRule()
    assert rule.refusal("169.254.169.254") == (
        "169.254.169.254 is link-local (169.254.0.0/16), where cloud metadata and credential services "
        "answer; hooks may not reach it unless the operator's LAMBDA_ROLLOUTS_HOOK_ALLOWED_NETWORKS "
        "allows it"
    )
    assert rule.refusal("127.0.0.1", name="hooks.example.com") == (
        "hooks.example.com resolves to 127.0.0.1, which is loopback (127.0.0.0/8); hooks may not "
        "reach it unless the operator's LAMBDA_ROLLOUTS_HOOK_ALLOWED_NETWORKS allows it"
    )
    assert rule.refusal("93.184.215.14") is None


@pytest.mark.parametrize(
    ("host", "refused"),
    [
        ("metadata.google.internal", True),
        ("METADATA.google.internal.", True),
        ("metadata.goog", True),
        ("instance-data", True),
        ("instance-data.ec2.internal", True),
        ("ci.example.com", False),
        # A bare "metadata" may be a Service in the cluster; the addresses it resolves to decide.
        ("metadata", False),
        ("metadata.google.internal.example.com", False),
        # Hosts written as addresses go through the address rule.
        ("169.254.169.254", True),
        ("::ffff:127.0.0.1", True),
        ("10.1.2.3", False),
    ],
)
def test_host_refusal_covers_metadata_names_and_addresses(host: str, refused: bool) -> None:
    assert (AddressRule().host_refusal(host) is not None) is refused


def test_metadata_names_stay_refused_whatever_is_allowed() -> None:
    everything = AddressRule.allowing([ip_network("0.0.0.0/0"), ip_network("::/0")])
    assert everything.refused_as("169.254.169.254") is None
    assert everything.host_refusal("metadata.google.internal") == (
        "metadata.google.internal is the name of a cloud metadata service, which hooks may not reach"
    )


@pytest.mark.parametrize(
    ("value", "networks"),
    [
        ("127.0.0.0/8", ["127.0.0.0/8"]),
        ("127.0.0.0/8, ::1", ["127.0.0.0/8", "::1/128"]),
        ('["169.254.170.2/32", "fd00:ec2::23"]', ["169.254.170.2/32", "fd00:ec2::23/128"]),
        ("", []),
    ],
)
def test_the_setting_takes_networks_comma_separated_or_as_json(
    monkeypatch: pytest.MonkeyPatch, value: str, networks: list[str]
) -> None:
    monkeypatch.setenv("LAMBDA_ROLLOUTS_HOOK_ALLOWED_NETWORKS", value)
    assert [str(network) for network in Settings().hook_allowed_networks] == networks


@pytest.mark.parametrize("value", ["127.0.0.1/8", "loopback", "10.0.0.0/33"])
def test_an_invalid_network_is_a_settings_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("LAMBDA_ROLLOUTS_HOOK_ALLOWED_NETWORKS", value)
    with pytest.raises(ValueError, match="hook_allowed_networks"):
        Settings()


def test_nothing_is_allowed_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAMBDA_ROLLOUTS_HOOK_ALLOWED_NETWORKS", raising=False)
    assert Settings().hook_allowed_networks == []
