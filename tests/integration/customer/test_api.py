"""Every RPC of bank.customer.v1.CustomerService against a real server process, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import grpc
from google.protobuf import field_mask_pb2

from bank.api.v1 import outbox_pb2
from bank.customer.v1 import customer_pb2, operations_pb2_grpc
from tests.integration.customer.conftest import PII_READER, WRITER, Client, failure, person, token

Customer = customer_pb2.Customer
Code = grpc.StatusCode


# --- create ------------------------------------------------------------------------------------


async def test_create_registers_a_pending_customer_with_masked_pii(client: Client) -> None:
    who = person()
    c = await client.create(who)
    assert c.customer_id and c.status == Customer.STATUS_PENDING and not c.kyc_verified
    assert c.version == 1 and c.etag and c.create_time.seconds > 0
    assert c.national_id == who.national_id[:6] + "********" + who.national_id[-4:]
    assert c.mobile == who.mobile[:3] + "****" + who.mobile[-4:]
    assert c.email == f"w***@{who.email.split('@')[1]}"
    assert c.full_name == "王**" and (c.birth_date.year, c.birth_date.month) == (who.born.year, 0)


async def test_create_is_idempotent_on_request_id(client: Client) -> None:
    who = person()
    first = await client.create(who, request_id="req-idem-" + who.mobile)
    again = await client.create(who, request_id="req-idem-" + who.mobile)
    assert again.customer_id == first.customer_id and again.version == 1

    other = person()
    err = await failure(client.create(other, request_id="req-idem-" + who.mobile))
    assert err.code == Code.ALREADY_EXISTS and err.reason == "REQUEST_ID_REUSED"
    assert f"req-idem-{who.mobile}" in err.message and err.metadata["request_id"] == f"req-idem-{who.mobile}"


async def test_duplicate_national_id_is_already_exists_without_echoing_it(client: Client) -> None:
    who = person()
    await client.create(who)
    twin = person()
    twin = type(twin)(twin.full_name, who.born, who.national_id, twin.mobile, twin.email)
    err = await failure(client.create(twin))
    assert err.code == Code.ALREADY_EXISTS and err.reason == "NATIONAL_ID_EXISTS"
    assert who.national_id not in err.message + repr(err.fields) + repr(err.metadata)
    assert "customer.national_id" in err.fields


async def test_create_rejects_bad_fields_naming_each(client: Client) -> None:
    who = person()
    broken_check = who.national_id[:17] + ("0" if who.national_id[17] != "0" else "1")
    bad = type(who)("王小明", who.born, broken_check, who.mobile, who.email)
    err = await failure(client.create(bad))
    assert err.code == Code.INVALID_ARGUMENT and "customer.national_id" in err.fields
    assert "check digit" in err.fields["customer.national_id"] and broken_check not in err.message

    mismatch = type(who)("王小明", who.born.replace(day=1 if who.born.day != 1 else 2), who.national_id, who.mobile, "")
    err = await failure(client.create(mismatch))
    assert err.code == Code.INVALID_ARGUMENT and list(err.fields) == ["customer.birth_date"]

    # protovalidate (contract rules) runs first: format errors name their fields too
    err = await failure(client.create(type(who)("王小明", who.born, who.national_id, "12345", "not-an-email")))
    assert err.code == Code.INVALID_ARGUMENT and {"customer.mobile", "customer.email"} <= set(err.fields)

    err = await failure(client.stub.CreateCustomer(customer_pb2.CreateCustomerRequest(), metadata=WRITER, timeout=10))
    assert err.code == Code.INVALID_ARGUMENT


async def test_create_needs_a_token_and_the_write_scope(client: Client) -> None:
    request = customer_pb2.CreateCustomerRequest(customer=person().message())
    err = await failure(client.stub.CreateCustomer(request, timeout=10))
    assert err.code == Code.UNAUTHENTICATED
    err = await failure(client.stub.CreateCustomer(request, metadata=token(["customers:read"]), timeout=10))
    assert err.code == Code.PERMISSION_DENIED and "customers:write" in err.message


# --- get ---------------------------------------------------------------------------------------


async def test_get_masks_unless_pii_read(client: Client) -> None:
    who = person()
    created = await client.create(who)
    masked = await client.get(created.customer_id)
    assert masked.national_id.count("*") == 8 and masked.mobile == who.mobile[:3] + "****" + who.mobile[-4:]
    clear = await client.get(created.customer_id, md=PII_READER)
    assert (clear.national_id, clear.mobile, clear.email, clear.full_name) == (
        who.national_id,
        who.mobile,
        who.email,
        who.full_name,
    )
    assert (clear.birth_date.year, clear.birth_date.month, clear.birth_date.day) == (
        who.born.year,
        who.born.month,
        who.born.day,
    )


async def test_get_unknown_is_not_found(client: Client) -> None:
    err = await failure(client.get("c-does-not-exist"))
    assert err.code == Code.NOT_FOUND and err.reason == "CUSTOMER_NOT_FOUND"
    err = await failure(client.get("not valid!"))
    assert err.code == Code.INVALID_ARGUMENT and "customer_id" in err.fields


# --- update ------------------------------------------------------------------------------------


def _update(
    customer_id: str, *, etag: str = "", paths: list[str], **fields: object
) -> customer_pb2.UpdateCustomerRequest:
    return customer_pb2.UpdateCustomerRequest(
        customer=Customer(customer_id=customer_id, etag=etag, **fields),  # type: ignore[arg-type]
        update_mask=field_mask_pb2.FieldMask(paths=paths),
    )


async def test_update_changes_only_masked_fields_and_checks_the_etag(client: Client) -> None:
    who = person()
    c = await client.create(who)
    updated = await client.stub.UpdateCustomer(
        _update(c.customer_id, etag=c.etag, paths=["mobile"], mobile="15900001111", email="ignored@example.com"),
        metadata=PII_READER,
        timeout=10,
    )
    assert updated.mobile == "15900001111" and updated.email == who.email
    assert updated.version == 2 and updated.etag != c.etag

    err = await failure(
        client.stub.UpdateCustomer(
            _update(c.customer_id, etag=c.etag, paths=["mobile"], mobile="15900002222"), metadata=WRITER, timeout=10
        )
    )
    assert err.code == Code.ABORTED and err.reason == "ETAG_MISMATCH"

    # national_id is immutable: not an allowed mask path
    err = await failure(
        client.stub.UpdateCustomer(
            _update(c.customer_id, paths=["national_id"], national_id=who.national_id), metadata=WRITER, timeout=10
        )
    )
    assert err.code == Code.INVALID_ARGUMENT

    # clearing a required field is refused; a bad value names the request's field path
    err = await failure(
        client.stub.UpdateCustomer(_update(c.customer_id, paths=["full_name"]), metadata=WRITER, timeout=10)
    )
    assert err.code == Code.INVALID_ARGUMENT
    err = await failure(
        client.stub.UpdateCustomer(
            _update(c.customer_id, paths=["full_name"], full_name="R2D2"), metadata=WRITER, timeout=10
        )
    )
    assert err.code == Code.INVALID_ARGUMENT and "customer.full_name" in err.fields

    err = await failure(
        client.stub.UpdateCustomer(
            _update("c-missing", paths=["mobile"], mobile="15900003333"), metadata=WRITER, timeout=10
        )
    )
    assert err.code == Code.NOT_FOUND


async def test_update_of_a_closed_customer_is_failed_precondition(client: Client) -> None:
    c = await client.active()
    await client.close(c.customer_id)
    err = await failure(
        client.stub.UpdateCustomer(
            _update(c.customer_id, paths=["mobile"], mobile="15900004444"), metadata=WRITER, timeout=10
        )
    )
    assert err.code == Code.FAILED_PRECONDITION and err.reason == "CUSTOMER_CLOSED"


# --- verify / assess / close ------------------------------------------------------------------------


async def test_verify_approves_adults_and_rejects(client: Client) -> None:
    c = await client.create()
    active = await client.verify(c.customer_id, etag=c.etag)
    assert active.status == Customer.STATUS_ACTIVE and active.kyc_verified and active.version == 2

    err = await failure(client.verify(c.customer_id))
    assert err.code == Code.FAILED_PRECONDITION and err.reason == "CUSTOMER_NOT_PENDING"

    minor = await client.create(person(age=12))
    err = await failure(client.verify(minor.customer_id))
    assert err.code == Code.FAILED_PRECONDITION and err.reason == "CUSTOMER_UNDERAGE"
    rejected = await client.verify(minor.customer_id, approve=False, reason="under age")
    assert rejected.status == Customer.STATUS_REJECTED and not rejected.kyc_verified

    stale = await client.create()
    await client.assess(stale.customer_id, 50)
    err = await failure(client.verify(stale.customer_id, etag=stale.etag))
    assert err.code == Code.ABORTED

    err = await failure(
        client.stub.VerifyCustomer(
            customer_pb2.VerifyCustomerRequest(customer_id=c.customer_id), metadata=WRITER, timeout=10
        )
    )
    assert err.code == Code.INVALID_ARGUMENT and "outcome" in err.fields
    err = await failure(client.verify("c-missing"))
    assert err.code == Code.NOT_FOUND


async def test_assess_risk_maps_scores_to_bands_with_expiry(client: Client) -> None:
    c = await client.create()
    for score, band in ((0, 1), (20, 1), (21, 2), (55, 3), (80, 4), (81, 5), (100, 5)):
        assessed = await client.assess(c.customer_id, score)
        assert assessed.risk_tolerance == band
        days = (assessed.risk_tolerance_expire_time.seconds - assessed.update_time.seconds) / 86400
        assert 364.9 < days < 365.1
    err = await failure(client.assess(c.customer_id, 101))
    assert err.code == Code.INVALID_ARGUMENT and "questionnaire_score" in err.fields

    rejected = await client.create()
    await client.verify(rejected.customer_id, approve=False)
    err = await failure(client.assess(rejected.customer_id, 50))
    assert err.code == Code.FAILED_PRECONDITION and err.reason == "CUSTOMER_REJECTED"


async def test_close_only_an_active_customer(client: Client) -> None:
    pending = await client.create()
    err = await failure(client.close(pending.customer_id))
    assert err.code == Code.FAILED_PRECONDITION and err.reason == "CUSTOMER_NOT_ACTIVE"
    active = await client.active()
    closed = await client.close(active.customer_id)
    assert closed.status == Customer.STATUS_CLOSED and closed.version == 3
    err = await failure(client.close(active.customer_id))
    assert err.code == Code.FAILED_PRECONDITION


async def test_custom_methods_are_idempotent_on_request_id(client: Client) -> None:
    c = await client.active()
    request = customer_pb2.AssessRiskRequest(
        customer_id=c.customer_id, questionnaire_score=70, request_id="risk-" + c.customer_id
    )
    first = await client.stub.AssessRisk(request, metadata=WRITER, timeout=10)
    again = await client.stub.AssessRisk(request, metadata=WRITER, timeout=10)
    assert again.version == first.version == 3
    request.questionnaire_score = 10
    err = await failure(client.stub.AssessRisk(request, metadata=WRITER, timeout=10))
    assert err.code == Code.ALREADY_EXISTS and err.metadata["request_id"] == request.request_id


# --- list ---------------------------------------------------------------------------------------


async def _all_pages(client: Client, **filters: object) -> list[str]:
    ids: list[str] = []
    token_ = ""
    while True:
        request = customer_pb2.ListCustomersRequest(page_size=7, page_token=token_, **filters)  # type: ignore[arg-type]
        page = await client.stub.ListCustomers(request, metadata=WRITER, timeout=10)
        assert len(page.customers) <= 7
        ids += [c.customer_id for c in page.customers]
        token_ = page.next_page_token
        if not token_:
            return ids


async def test_pagination_covers_every_row_exactly_once(client: Client) -> None:
    created = [(await client.create()).customer_id for _ in range(16)]
    activated = {(await client.active()).customer_id for _ in range(3)}
    ids = await _all_pages(client)
    assert len(ids) == len(set(ids)), "a row appeared twice"
    everything = await client.stub.ListCustomers(
        customer_pb2.ListCustomersRequest(page_size=1000), metadata=WRITER, timeout=10
    )
    assert ids == [c.customer_id for c in everything.customers]
    assert set(created) | activated <= set(ids)

    active_ids = await _all_pages(client, status=Customer.STATUS_ACTIVE)
    assert activated <= set(active_ids) and not set(created) & set(active_ids)
    verified = await _all_pages(client, kyc_verified=True)
    assert activated <= set(verified) and not set(created) & set(verified)
    unverified = await _all_pages(client, kyc_verified=False, status=Customer.STATUS_PENDING)
    assert set(created) <= set(unverified)


async def test_list_masks_and_validates_its_arguments(client: Client) -> None:
    who = person()
    await client.create(who)
    page = await client.stub.ListCustomers(
        customer_pb2.ListCustomersRequest(page_size=1000), metadata=WRITER, timeout=10
    )
    assert all("*" in c.national_id for c in page.customers)

    err = await failure(
        client.stub.ListCustomers(customer_pb2.ListCustomersRequest(page_size=1001), metadata=WRITER, timeout=10)
    )
    assert err.code == Code.INVALID_ARGUMENT and "page_size" in err.fields
    err = await failure(
        client.stub.ListCustomers(customer_pb2.ListCustomersRequest(page_token="forged"), metadata=WRITER, timeout=10)
    )
    assert err.code == Code.INVALID_ARGUMENT and "page_token" in err.fields

    first = await client.stub.ListCustomers(customer_pb2.ListCustomersRequest(page_size=1), metadata=WRITER, timeout=10)
    assert first.next_page_token
    other_filter = customer_pb2.ListCustomersRequest(
        page_size=1, page_token=first.next_page_token, status=Customer.STATUS_ACTIVE
    )
    err = await failure(client.stub.ListCustomers(other_filter, metadata=WRITER, timeout=10))
    assert err.code == Code.INVALID_ARGUMENT and "page_token" in err.fields
    err = await failure(
        client.stub.ListCustomers(customer_pb2.ListCustomersRequest(), metadata=token(["customers:write"]), timeout=10)
    )
    assert err.code == Code.PERMISSION_DENIED


# --- eligibility (internal) -----------------------------------------------------------------------


async def test_eligibility_profile_has_age_and_no_pii(client: Client) -> None:
    who = person(age=40)
    c = await client.active(who)
    await client.assess(c.customer_id, 90)
    profile = await client.stub.GetEligibilityProfile(
        customer_pb2.GetEligibilityProfileRequest(customer_id=c.customer_id), metadata=WRITER, timeout=10
    )
    assert profile.status == Customer.STATUS_ACTIVE and profile.kyc_verified
    assert profile.age_years == 40 and profile.risk_tolerance == 5 and profile.version == 3
    assert profile.HasField("risk_tolerance_expire_time")
    raw = profile.SerializeToString()
    assert who.national_id.encode() not in raw and who.mobile.encode() not in raw
    err = await failure(
        client.stub.GetEligibilityProfile(
            customer_pb2.GetEligibilityProfileRequest(customer_id="c-missing"), metadata=WRITER, timeout=10
        )
    )
    assert err.code == Code.NOT_FOUND


async def test_batch_eligibility_profiles_answer_each_customer_as_the_single_call_does(client: Client) -> None:
    """ADR 0058: the product's waiting lookups in one call; an unknown customer is named, not an error."""
    first, second = await client.active(person(age=40)), await client.active(person(age=25))
    await client.assess(first.customer_id, 90)
    asked = [second.customer_id, "c-missing", first.customer_id]
    batch = await client.stub.BatchGetEligibilityProfiles(
        customer_pb2.BatchGetEligibilityProfilesRequest(customer_ids=asked), metadata=WRITER, timeout=10
    )
    assert list(batch.missing_customer_ids) == ["c-missing"]
    by_id = {p.customer_id: p for p in batch.profiles}
    assert set(by_id) == {first.customer_id, second.customer_id}
    for customer_id, profile in by_id.items():
        single = await client.stub.GetEligibilityProfile(
            customer_pb2.GetEligibilityProfileRequest(customer_id=customer_id), metadata=WRITER, timeout=10
        )
        assert profile == single
    assert by_id[first.customer_id].age_years == 40 and by_id[second.customer_id].age_years == 25
    for bad in ([], ["ok", "ok"], ["not/an/id"]):
        err = await failure(
            client.stub.BatchGetEligibilityProfiles(
                customer_pb2.BatchGetEligibilityProfilesRequest(customer_ids=bad), metadata=WRITER, timeout=10
            )
        )
        assert err.code == Code.INVALID_ARGUMENT and any(f.startswith("customer_ids") for f in err.fields)
    err = await failure(
        client.stub.BatchGetEligibilityProfiles(
            customer_pb2.BatchGetEligibilityProfilesRequest(customer_ids=[first.customer_id]),
            metadata=token(["customers:write"]),
            timeout=10,
        )
    )
    assert err.code == Code.PERMISSION_DENIED


# --- operations: the outbox status (ops:admin, served by the kit) -------------------------------


async def test_outbox_status_needs_ops_admin_and_drains(client: Client, customer_service) -> None:  # type: ignore[no-untyped-def]
    await client.create()
    async with grpc.aio.insecure_channel(customer_service.target) as channel:
        ops = operations_pb2_grpc.CustomerOperationsServiceStub(channel)
        request = outbox_pb2.GetOutboxStatusRequest()
        err = await failure(ops.GetOutboxStatus(request, metadata=WRITER, timeout=5))
        assert err.code == Code.PERMISSION_DENIED and "ops:admin" in err.message
        for _ in range(100):  # the relay publishes it (poll 0.2 s)
            status = await ops.GetOutboxStatus(request, metadata=token(["ops:admin"]), timeout=5)
            assert status.capability == "customer"
            if status.backlog == 0:
                break
            assert status.HasField("oldest_pending_time")
            await asyncio.sleep(0.1)
        assert status.backlog == 0 and not status.HasField("oldest_pending_time")
