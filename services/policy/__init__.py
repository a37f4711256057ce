"""Bank-wide business policies that more than one capability applies: pure, one home each.

A rule two capabilities need lives here once (ARCHITECTURE §9, "one home per business rule"),
never copied into each: the product service decides with it whether a customer may open a
product, and the data hub with the same function whether it may offer it. No I/O and no kit
imports; the inputs are plain facts each caller builds from what it knows (docs/adr/0011).
"""
