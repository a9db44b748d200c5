"""The one dollar formatter every report uses (schemas/money.py), on hand-picked amounts."""

import pytest

from recipe_ft.schemas.money import usd


@pytest.mark.parametrize("amount, text", [
    (None, "-"), (0, "$0.00"), (0.64, "$0.64"), (0.06, "$0.06"), (0.0694, "$0.069"), (0.00031, "$0.00031"),
    (2.5, "$2.50"), (313.728, "$313.73"), (999.994, "$999.99"), (999.996, "$1,000"), (1033.6, "$1,034"),
    (-717.44, "-$717.44"), (-0.5, "-$0.50"), (12_345.6, "$12,346"),
])
def test_usd(amount, text):
    assert usd(amount) == text
