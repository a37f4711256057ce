{{/*
  Scripts run by the `helm test` pods with the chart's own image (python, grpcio and
  grpcio-health-checking are installed there). tests/chart runs the same text against
  local servers, so the scripts are checked before they ever reach a cluster.
*/}}
{{- define "zhongtai.test.grpcHealthScript" -}}
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

target, timeout = sys.argv[1], float(sys.argv[2])
with grpc.insecure_channel(target) as channel:
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=timeout
        )
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    except grpc.RpcError as err:
        status = err.code().name
print(f"{target}: {status}")
sys.exit(0 if status == "SERVING" else 1)
{{- end -}}

{{- define "zhongtai.test.httpReadyScript" -}}
import sys
import urllib.error
import urllib.request

url, timeout = sys.argv[1], float(sys.argv[2])
try:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        status = reply.status
except urllib.error.HTTPError as err:
    status = err.code
except OSError as err:
    print(f"{url}: {err}")
    sys.exit(1)
print(f"{url}: HTTP {status}")
sys.exit(0 if status == 200 else 1)
{{- end -}}
