"""The `(bank.api.v1.event)` message option is the single event→topic registry: producers read
topic and key from it, the data hub subscribes from it. These tests pin the registry."""

from __future__ import annotations

from google.protobuf import descriptor as _descriptor

# topic → event messages (ARCHITECTURE §5 and the issue "Contracts v1").
EXPECTED_REGISTRY: dict[str, tuple[str, set[str]]] = {
    "bank.customer.v1": (
        "customer_id",
        {
            "bank.customer.v1.CustomerCreated",
            "bank.customer.v1.CustomerUpdated",
            "bank.customer.v1.CustomerVerified",
            "bank.customer.v1.CustomerRejected",
            "bank.customer.v1.CustomerRiskAssessed",
            "bank.customer.v1.CustomerClosed",
        },
    ),
    "bank.product.v1": ("product_id", {"bank.product.v1.ProductPublished", "bank.product.v1.ProductRetired"}),
    "bank.subscription.v1": (
        "customer_id",
        {
            "bank.product.v1.SubscriptionOpened",
            "bank.product.v1.SubscriptionClosed",
            "bank.product.v1.TransactionPosted",
        },
    ),
    "bank.customer-view.v1": ("customer_id", {"bank.datahub.v1.CustomerView"}),
}


def registry(contracts) -> dict[str, tuple[str, str]]:
    """message full name → (topic, key_field), read from the descriptors."""
    out = {}
    for message in contracts.messages:
        opts = message.GetOptions()
        if opts.HasExtension(contracts.options.event):
            spec = opts.Extensions[contracts.options.event]
            out[message.full_name] = (spec.topic, spec.key_field)
    return out


def resolve(message: _descriptor.Descriptor, dotted: str) -> _descriptor.FieldDescriptor:
    desc: _descriptor.Descriptor | None = message
    field = None
    for part in dotted.split("."):
        assert desc is not None, f"{message.full_name}: {dotted} walks into a scalar"
        field = desc.fields_by_name.get(part)
        assert field is not None, f"{message.full_name}: key_field {dotted!r} does not resolve ({part!r})"
        assert not _is_repeated(field), f"{message.full_name}: key_field {dotted!r} crosses a repeated field"
        desc = field.message_type
    assert field is not None
    return field


def _is_repeated(field: _descriptor.FieldDescriptor) -> bool:
    is_repeated = getattr(field, "is_repeated", None)
    if is_repeated is not None:
        return bool(is_repeated)
    return getattr(field, "label", None) == 3  # LABEL_REPEATED (protobuf < 6 has no is_repeated)


def test_registry_is_exactly_the_expected_one(contracts) -> None:
    expected = {name: (topic, key) for topic, (key, names) in EXPECTED_REGISTRY.items() for name in names}
    assert registry(contracts) == expected


def test_topics_and_keys_are_valid(contracts) -> None:
    by_name = {m.full_name: m for m in contracts.messages}
    for name, (topic, key_field) in registry(contracts).items():
        assert topic in contracts.topics, f"{name}: unknown topic {topic!r}"
        field = resolve(by_name[name], key_field)
        assert field.type == field.TYPE_STRING, f"{name}: key_field {key_field!r} is not a string"


def test_events_carry_version_and_time(contracts) -> None:
    by_name = {m.full_name: m for m in contracts.messages}
    for name in registry(contracts):
        message = by_name[name]
        version = message.fields_by_name.get("version")
        assert version is not None and version.type == version.TYPE_INT64, f"{name}: needs int64 version"
        # Change events carry when the change happened; the view (a state topic) when its newest
        # input happened.
        time_field = "last_event_time" if name.endswith("View") else "occur_time"
        ts = message.fields_by_name.get(time_field)
        assert ts is not None and ts.message_type is not None, f"{name}: needs {time_field}"
        assert ts.message_type.full_name == "google.protobuf.Timestamp", f"{name}: {time_field} type"


def test_every_message_in_an_events_file_is_registered(contracts) -> None:
    """Top-level messages of */events.proto are events, except *Snapshot payload parts."""
    for file in contracts.files:
        if not file.name.endswith("/events.proto"):
            continue
        for message in file.message_types_by_name.values():
            if message.name.endswith("Snapshot"):
                assert not message.GetOptions().HasExtension(contracts.options.event)
                continue
            assert message.GetOptions().HasExtension(contracts.options.event), (
                f"{message.full_name} in {file.name} lacks option (bank.api.v1.event)"
            )


def test_catalogue_events_carry_the_full_product(contracts) -> None:
    from bank.product.v1 import events_pb2

    for event in (events_pb2.ProductPublished, events_pb2.ProductRetired):
        product = event.DESCRIPTOR.fields_by_name["product"].message_type
        assert product is not None
        assert product.full_name == "bank.product.v1.Product"
        assert {"terms", "eligibility", "risk_level", "type", "state"} <= set(product.fields_by_name)


def test_transaction_posted_has_what_the_view_needs() -> None:
    from bank.product.v1 import events_pb2

    fields = events_pb2.TransactionPosted.DESCRIPTOR.fields_by_name
    assert {"customer_id", "subscription_id", "product_type", "transaction"} <= set(fields)
    transaction = fields["transaction"].message_type
    assert transaction is not None
    assert "balance_after" in transaction.fields_by_name
