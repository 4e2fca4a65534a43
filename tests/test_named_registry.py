"""The modality registry's table: order, duplicates, clear errors."""

import dataclasses

import pytest

from astrom3_jax.data import modalities
from astrom3_jax.data.named_registry import NamedRegistry


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    value: int


def test_order_duplicates_and_overwrite():
    table = NamedRegistry("widget")
    table.register(Entry("b", 1))
    table.register(Entry("a", 2))
    assert table.names() == ("b", "a")
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        table.register(Entry("a", 3))
    table.register(Entry("a", 3), overwrite=True)
    assert table.get("a").value == 3
    assert "a" in table and "c" not in table
    table.unregister("a")
    assert table.names() == ("b",)


def test_unknown_name_lists_known_ones():
    table = NamedRegistry("widget")
    table.register(Entry("z", 0))
    with pytest.raises(KeyError, match=r"unknown widget 'q'; registered: \['z'\]"):
        table.get("q")


def test_temporarily_registers_for_the_block_only():
    table = NamedRegistry("widget")
    table.register(Entry("a", 1))
    table.register(Entry("b", 2))
    with table.temporarily(Entry("c", 3)) as entry:
        assert entry == Entry("c", 3)
        assert table.names() == ("a", "b", "c") and table.get("c").value == 3
    assert table.names() == ("a", "b")
    with pytest.raises(RuntimeError, match="boom"):
        with table.temporarily(Entry("c", 3)):
            raise RuntimeError("boom")
    assert table.names() == ("a", "b")


def test_temporarily_overwritten_entry_comes_back_in_place():
    table = NamedRegistry("widget")
    table.register(Entry("a", 1))
    table.register(Entry("b", 2))
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        with table.temporarily(Entry("a", 9)):
            pass
    assert table.get("a").value == 1
    with table.temporarily(Entry("a", 9), overwrite=True):
        assert table.get("a").value == 9
    assert table.names() == ("a", "b") and table.get("a") == Entry("a", 1)


def test_the_modality_table_holds_exactly_the_three_modalities():
    # Exact: a test that registers a modality and leaves it behind fails here.
    expected = ("photometry", "spectra", "metadata")
    assert tuple(modalities.names()) == expected
    with pytest.raises(ValueError, match="already registered"):
        modalities.register(modalities.entry("spectra"))
    with pytest.raises(KeyError, match="unknown modality 'radio'"):
        modalities.entry("radio")


def test_string_encoders_resolve_to_the_model_classes():
    from astrom3_jax.models.metadata import MetadataMLP
    from astrom3_jax.models.photometry import Informer
    from astrom3_jax.models.spectra import GalSpecNet

    got = [modalities.entry(n).encoder_class() for n in modalities.names()]
    assert got == [Informer, GalSpecNet, MetadataMLP]
