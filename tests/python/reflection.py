"""A relay.v1 call made from what gRPC server reflection says, as a generic
client (grpcurl, Postman, a portal in another language) makes it: no .proto
file and no generated code. Lists the services over reflection (v1alpha, what
grpcio-reflection's descriptor database speaks), resolves Relay.Ping's
descriptors from the broker, builds the request dynamically and calls it.
Prints one JSON line: the services, the Ping's answer, and what reflection
answers a caller without a token.

Run by tests/tests/reflection.rs with the venv of scripts/python/install:
    python reflection.py --target 127.0.0.1:PORT --ca ca.pem --tenant contoso
The shared access signature comes in the RELAY_TOKEN environment variable,
so that it is not on a command line.
"""

import argparse
import json
import os

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


class Token(grpc.AuthMetadataPlugin):
    """Puts the token in `authorization` on every call, reflection's too."""

    def __init__(self, token):
        self._token = token

    def __call__(self, context, callback):
        callback((("authorization", self._token),), None)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--tenant", required=True)
    args = parser.parse_args()
    token = os.environ["RELAY_TOKEN"]

    with open(args.ca, "rb") as f:
        tls = grpc.ssl_channel_credentials(root_certificates=f.read())
    result = {}
    with grpc.secure_channel(args.target, tls) as channel:
        try:
            ProtoReflectionDescriptorDatabase(channel).get_services()
            result["without_token"] = "OK"
        except grpc.RpcError as err:
            result["without_token"] = err.code().name

    credentials = grpc.composite_channel_credentials(
        tls, grpc.metadata_call_credentials(Token(token))
    )
    with grpc.secure_channel(args.target, credentials) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        result["services"] = sorted(database.get_services())
        pool = descriptor_pool.DescriptorPool(database)
        method = pool.FindServiceByName("relay.v1.Relay").methods_by_name["Ping"]
        request_class = message_factory.GetMessageClass(method.input_type)
        reply_class = message_factory.GetMessageClass(method.output_type)
        ping = channel.unary_unary(
            f"/{method.containing_service.full_name}/{method.name}",
            request_serializer=request_class.SerializeToString,
            response_deserializer=reply_class.FromString,
        )
        try:
            reply = ping(request_class(tenant=args.tenant), timeout=10)
            result["ping"] = {
                "code": "OK",
                "agent_id": reply.agent_id,
                "fields": sorted(f.name for f in reply_class.DESCRIPTOR.fields),
            }
        except grpc.RpcError as err:
            result["ping"] = {"code": err.code().name, "message": err.details()}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
