import io
import json

from services.kit.logging import configure_logging, get_logger, scrub_text


def test_pii_shaped_values_are_masked_in_free_text() -> None:
    text = "customer 11010519491231002X mobile 13812345678 mail a.b@example.com Bearer abc.def.ghi"
    scrubbed = scrub_text(text)
    assert "11010519491231002X" not in scrubbed
    assert "13812345678" not in scrubbed
    assert "a.b@example.com" not in scrubbed
    assert "abc.def.ghi" not in scrubbed


def test_logs_are_json_lines_with_sensitive_keys_redacted() -> None:
    stream = io.StringIO()
    configure_logging("unit", "INFO", stream=stream)
    get_logger("t").info("created", national_id="11010519491231002X", note="call 13812345678", count=3)
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["message"] == "created"
    assert line["service"] == "unit"
    assert line["national_id"] == "[REDACTED]"
    assert "13812345678" not in line["note"]
    assert line["count"] == 3


def test_logs_carry_trace_ids_inside_a_span() -> None:
    from opentelemetry import trace

    from services.kit.telemetry import install_in_memory

    install_in_memory()
    stream = io.StringIO()
    configure_logging("unit", "INFO", stream=stream)
    with trace.get_tracer("t").start_as_current_span("s") as span:
        get_logger().info("inside")
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")


def test_a_hot_logger_follows_every_reconfiguration() -> None:
    from structlog.testing import capture_logs

    from services.kit.logging import HotLogger

    log = HotLogger("hot")
    first, second = io.StringIO(), io.StringIO()
    configure_logging("unit", "INFO", stream=first)
    log.info("one", mobile="13812345678", rpc="/x.Y/Z")
    log.info("one and %s", "a half")
    configure_logging("unit", "INFO", stream=second)
    log.info("two")
    with capture_logs() as captured:
        log.info("three")
    configure_logging("unit", "WARNING", stream=second)
    log.info("filtered")
    assert [json.loads(x)["message"] for x in first.getvalue().splitlines()] == ["one", "one and a half"]
    assert json.loads(first.getvalue().splitlines()[0])["mobile"] == "[REDACTED]"
    assert [json.loads(x)["message"] for x in second.getvalue().splitlines()] == ["two"]
    assert [c["event"] for c in captured] == ["three"]


def test_a_value_is_scrubbed_on_every_line_and_a_clean_one_stays_as_it_is() -> None:
    stream = io.StringIO()
    configure_logging("unit", "INFO", stream=stream)
    for _ in range(3):
        get_logger("t").info("call", note="call 13812345678", rpc="/bank.customer.v1.CustomerService/GetCustomer")
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert len(lines) == 3
    assert all("13812345678" not in line["note"] for line in lines)
    assert all(line["rpc"] == "/bank.customer.v1.CustomerService/GetCustomer" for line in lines)
