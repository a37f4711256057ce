import grpc
from google.rpc import code_pb2, error_details_pb2

from services.kit.errors import FieldViolation, InvalidArgument, NotFound, internal_status, to_rpc_status


def test_invalid_argument_carries_field_violations() -> None:
    status = to_rpc_status(
        InvalidArgument("bad", violations=[FieldViolation("customer.mobile", "not a mobile number")])
    )
    assert status.code == code_pb2.INVALID_ARGUMENT
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details)
    assert bad.field_violations[0].field == "customer.mobile"


def test_every_error_carries_error_info_with_a_reason() -> None:
    status = to_rpc_status(NotFound("customer c-1 not found", reason="CUSTOMER_NOT_FOUND"))
    info = error_details_pb2.ErrorInfo()
    assert any(d.Unpack(info) for d in status.details)
    assert info.reason == "CUSTOMER_NOT_FOUND"
    assert NotFound.code == grpc.StatusCode.NOT_FOUND


def test_internal_status_leaks_nothing() -> None:
    status = internal_status()
    assert status.message == "internal error"
    assert not status.details


def test_an_error_with_a_retry_delay_carries_retry_info_and_others_do_not() -> None:
    from services.kit.errors import Unavailable

    status = to_rpc_status(Unavailable("being built", reason="VIEW_NOT_BUILT", retry_delay_s=1.5))
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(retry) for d in status.details)
    assert retry.retry_delay.ToNanoseconds() == 1_500_000_000
    plain = to_rpc_status(Unavailable("down"))
    assert not any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in plain.details)
