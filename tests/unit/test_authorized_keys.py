"""authorized_keys: labgpu's keys in one block, the member's own lines kept."""

from __future__ import annotations

from labgpu.services.members._keys import KEYS_BEGIN, KEYS_END, merged_authorized_keys

A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA alice@laptop"
B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB alice@desktop"
OWN = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC added-by-alice-herself"


def test_a_new_file_is_labgpus_block() -> None:
    assert merged_authorized_keys(None, [A, B]) == f"{KEYS_BEGIN}\n{A}\n{B}\n{KEYS_END}\n"


def test_the_members_own_lines_survive_a_key_change_and_a_removed_key_goes() -> None:
    first = merged_authorized_keys(None, [A, B])
    edited = f"# mine\n{OWN}\n\n" + first + 'command="true" ' + OWN + "\n"
    again = merged_authorized_keys(edited, [A])
    assert again.splitlines() == ["# mine", OWN, "", f'command="true" {OWN}', KEYS_BEGIN, A, KEYS_END]
    assert B not in again


def test_a_file_an_older_labgpu_wrote_whole_is_replaced_whole() -> None:
    """Without the block every line was labgpu's: a key an admin removes must not stay as an own line."""
    legacy = f"{A}\n{B}\n"
    assert merged_authorized_keys(legacy, [A]) == f"{KEYS_BEGIN}\n{A}\n{KEYS_END}\n"


def test_no_keys_leaves_an_empty_block_and_the_own_lines() -> None:
    current = f"{OWN}\n" + merged_authorized_keys(None, [A])
    assert merged_authorized_keys(current, []) == f"{OWN}\n{KEYS_BEGIN}\n{KEYS_END}\n"
