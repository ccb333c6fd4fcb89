"""Roles, key hashing and bearer parsing (``services.common.auth``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.auth import (
    ROLE_ORDER,
    Identity,
    Role,
    bearer_key,
    generate_key,
    hash_key,
    key_matches,
    require_role,
)
from services.common.errors import Forbidden, Unauthorized


def test_each_role_includes_the_ones_before_it():
    assert ROLE_ORDER == (Role.viewer, Role.scientist, Role.deployer, Role.admin)
    for i, role in enumerate(ROLE_ORDER):
        assert [role.includes(other) for other in ROLE_ORDER] == [j <= i for j in range(len(ROLE_ORDER))]


def test_require_role_refuses_a_smaller_role_with_403():
    deployer = Identity(name="dee", role=Role.deployer)
    assert require_role(deployer, Role.scientist) is deployer
    with pytest.raises(Forbidden) as refused:
        require_role(deployer, Role.admin)
    assert refused.value.status == 403 and refused.value.extra == {"required_role": "admin", "role": "deployer"}


def test_keys_are_random_and_only_their_hash_matches():
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100 and all(k.startswith("mlf_") and len(k) > 40 for k in keys)
    key = keys.pop()
    assert hash_key(key) != key and len(hash_key(key)) == 64
    assert key_matches(key, hash_key(key))
    assert not key_matches(key + "x", hash_key(key))


@given(st.text(min_size=1, max_size=100).filter(lambda k: k.strip() == k and " " not in k))
def test_a_bearer_header_yields_its_key(key):
    assert bearer_key(f"Bearer {key}") == key
    assert bearer_key(f"bearer   {key}  ") == key


@pytest.mark.parametrize("header", [None, "", "   ", "Bearer", "Bearer ", "Basic abc", "Token abc", "Bearer a b",
                                    "Bearer " + "k" * 300])
def test_a_missing_or_malformed_header_is_401(header):
    with pytest.raises(Unauthorized):
        bearer_key(header)
