"""parity/checkout.py: the authors' code imported from the user's checkout."""

from __future__ import annotations

import pytest

from mmer_jax.parity import checkout
from mmer_jax.parity import mmin as mmin_parity


def test_missing_checkout_is_a_clear_error(tmp_path):
  with pytest.raises(SystemExit, match='lacks'):
    with checkout.on_path(str(tmp_path), mmin_parity.REQUIRED):
      pass
