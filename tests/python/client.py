"""A relay.v1 portal call from Python's grpcio, as an independent portal
makes it: stubs generated from proto/ at run time, the caller's own deadline
(grpc-timeout), and the answer read only from what gRPC carries (status code,
google.rpc.ErrorInfo). Prints one JSON line: the outcome of one Submit.
The google.rpc messages are generated from the copies vendored in proto/, not
taken from a googleapis package: a portal needs nothing but proto/.

Run by tests/tests/caller_deadline.rs with the venv of scripts/python/install:
    python client.py --proto-dir proto/proto --target 127.0.0.1:PORT \
        --ca ca.pem --tenant contoso --request-id r1 --timeout 2
The shared access signature comes in the RELAY_TOKEN environment variable,
so that it is not on a command line.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc


def generate(proto_dir, out_dir):
    """Generates the relay.v1 modules from the .proto files into out_dir."""
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    files = [
        os.path.join("relay", "v1", name)
        for name in ("common.proto", "relay.proto")
    ] + [
        os.path.join("google", "rpc", name)
        for name in ("status.proto", "error_details.proto")
    ]
    code = protoc.main(
        [
            "protoc",
            f"-I{proto_dir}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            *files,
        ]
    )
    if code != 0:
        sys.exit(f"protoc failed with {code}")
    # A regular package, so an installed googleapis copy cannot shadow it.
    open(os.path.join(out_dir, "google", "rpc", "__init__.py"), "w").close()
    sys.path.insert(0, out_dir)


def error_info(err):
    """The google.rpc.ErrorInfo in the call's grpc-status-details-bin trailer."""
    from google.rpc import error_details_pb2, status_pb2

    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--proto-dir", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--request-id", required=True)
    parser.add_argument(
        "--agent-id", required=True, help="the agent the envelope is addressed to"
    )
    parser.add_argument("--timeout", type=float, required=True, help="seconds")
    args = parser.parse_args()
    token = os.environ["RELAY_TOKEN"]

    with tempfile.TemporaryDirectory() as out_dir:
        generate(args.proto_dir, out_dir)
        from relay.v1 import common_pb2, relay_pb2, relay_pb2_grpc

        with open(args.ca, "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        with grpc.secure_channel(args.target, credentials) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            stub = relay_pb2_grpc.RelayStub(channel)
            request = relay_pb2.SubmitRequest(
                tenant=args.tenant,
                request_id=args.request_id,
                operation=common_pb2.OPERATION_RESET_PASSWORD,
                envelope=b"sealed",
                agent_id=args.agent_id,
            )
            started = time.monotonic()
            result = {}
            try:
                reply = stub.Submit(
                    request,
                    timeout=args.timeout,
                    metadata=[("authorization", token)],
                )
                result = {"code": "OK", "agent_id": reply.agent_id}
            except grpc.RpcError as err:
                result = {"code": err.code().name, "message": err.details()}
                info = error_info(err)
                if info is not None:
                    result["domain"] = info.domain
                    result["reason"] = info.reason
                    result["metadata"] = dict(info.metadata)
            result["elapsed_ms"] = round((time.monotonic() - started) * 1000)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
