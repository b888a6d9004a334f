"""Exceptions raised by the client.

Kafka reports failures as error codes inside responses. `KafkaError(code)` turns one into an
exception that carries the code, its upper-case Kafka name (``NOT_LEADER_OR_FOLLOWER``) and whether
Kafka documents it as retriable. `KafkaError(code)` returns an instance of the most specific
subclass registered for that code, so callers can write ``except NotLeaderOrFollowerError``.

Failures that are not Kafka error codes (a dropped connection, a timeout, a closed client) have
their own classes below; ConnectionLost and RequestTimedOut are retriable.
"""
from __future__ import annotations

from kio.schema.errors import ErrorCode

__all__ = [
    "BrokerResponseError",
    "ClientClosed",
    "ConnectionLost",
    "CorruptRecord",
    "ErrorCode",
    "KafkaError",
    "NoBrokersAvailable",
    "ProducerFenced",
    "RequestTimedOut",
    "UnsupportedApi",
    "error_for",
    "raise_for_code",
]

_BY_CODE: dict[int, type[KafkaError]] = {}


class KafkaError(Exception):
    """A Kafka error code as an exception.

    ``KafkaError(6)`` (or ``KafkaError(ErrorCode.not_leader_or_follower)``) builds the registered
    subclass for the code when there is one.
    """

    code: int = -1
    name: str = "UNKNOWN_SERVER_ERROR"
    retriable: bool = False
    # codes whose subclass is this class (set by __init_subclass__)
    _codes: tuple[int, ...] = ()

    def __new__(cls, code: int | ErrorCode | None = None, message: str | None = None):
        if cls is KafkaError and code is not None:
            sub = _BY_CODE.get(int(code))
            if sub is not None:
                cls = sub
        return super().__new__(cls)

    def __init__(self, code: int | ErrorCode | None = None, message: str | None = None) -> None:
        if code is None:
            code = self._codes[0] if self._codes else -1
        code = int(code)
        try:
            ec = ErrorCode(code)
            name = ec.name.upper()
            retriable = bool(ec.retriable)
        except ValueError:
            name = f"UNKNOWN_ERROR_{code}"
            retriable = False
        self.code = code
        self.name = name
        self.retriable = retriable
        self.message = message
        text = f"[Error {code}] {name}"
        if message:
            text += f": {message}"
        super().__init__(text)

    def __init_subclass__(cls, codes: tuple[int, ...] = (), **kw) -> None:
        super().__init_subclass__(**kw)
        cls._codes = tuple(int(c) for c in codes)
        for c in cls._codes:
            _BY_CODE[c] = cls

    def __reduce__(self):
        return (type(self), (self.code, self.message))


# Python exceptions that carry a Kafka error code are all KafkaError; the alias reads well in
# places that handle responses.
BrokerResponseError = KafkaError


def error_for(code: int | ErrorCode, message: str | None = None) -> KafkaError:
    return KafkaError(code, message)


def raise_for_code(code: int | ErrorCode, message: str | None = None) -> None:
    """Raise the KafkaError for `code` unless it is 0 (NONE)."""
    if code:
        raise KafkaError(code, message)


def _define(class_name: str, code: ErrorCode) -> type[KafkaError]:
    cls = type(class_name, (KafkaError,), {"__doc__": f"Kafka error {int(code)} ({code.name.upper()})."}, codes=(code,))
    cls.__module__ = __name__
    return cls


# One subclass per error a client meets in practice. Defined through a table so the names and
# codes stay in one place.
_COMMON = {
    "UnknownServerError": ErrorCode.unknown_server_error,
    "OffsetOutOfRangeError": ErrorCode.offset_out_of_range,
    "CorruptMessageError": ErrorCode.corrupt_message,
    "UnknownTopicOrPartitionError": ErrorCode.unknown_topic_or_partition,
    "LeaderNotAvailableError": ErrorCode.leader_not_available,
    "NotLeaderOrFollowerError": ErrorCode.not_leader_or_follower,
    "RequestTimedOutError": ErrorCode.request_timed_out,
    "MessageTooLargeError": ErrorCode.message_too_large,
    "CoordinatorLoadInProgressError": ErrorCode.coordinator_load_in_progress,
    "CoordinatorNotAvailableError": ErrorCode.coordinator_not_available,
    "NotCoordinatorError": ErrorCode.not_coordinator,
    "InvalidTopicError": ErrorCode.invalid_topic_exception,
    "RecordListTooLargeError": ErrorCode.record_list_too_large,
    "NotEnoughReplicasError": ErrorCode.not_enough_replicas,
    "IllegalGenerationError": ErrorCode.illegal_generation,
    "InconsistentGroupProtocolError": ErrorCode.inconsistent_group_protocol,
    "UnknownMemberIdError": ErrorCode.unknown_member_id,
    "InvalidSessionTimeoutError": ErrorCode.invalid_session_timeout,
    "RebalanceInProgressError": ErrorCode.rebalance_in_progress,
    "TopicAuthorizationFailedError": ErrorCode.topic_authorization_failed,
    "GroupAuthorizationFailedError": ErrorCode.group_authorization_failed,
    "UnsupportedVersionError": ErrorCode.unsupported_version,
    "TopicAlreadyExistsError": ErrorCode.topic_already_exists,
    "InvalidPartitionsError": ErrorCode.invalid_partitions,
    "InvalidReplicationFactorError": ErrorCode.invalid_replication_factor,
    "InvalidRequestError": ErrorCode.invalid_request,
    "UnsupportedForMessageFormatError": ErrorCode.unsupported_for_message_format,
    "OutOfOrderSequenceError": ErrorCode.out_of_order_sequence_number,
    "DuplicateSequenceError": ErrorCode.duplicate_sequence_number,
    "InvalidProducerEpochError": ErrorCode.invalid_producer_epoch,
    "InvalidConfigError": ErrorCode.invalid_config,
    "NotControllerError": ErrorCode.not_controller,
    "UnknownProducerIdError": ErrorCode.unknown_producer_id,
    "NonEmptyGroupError": ErrorCode.non_empty_group,
    "GroupIdNotFoundError": ErrorCode.group_id_not_found,
    "FencedLeaderEpochError": ErrorCode.fenced_leader_epoch,
    "UnknownLeaderEpochError": ErrorCode.unknown_leader_epoch,
    "MemberIdRequiredError": ErrorCode.member_id_required,
    "GroupMaxSizeReachedError": ErrorCode.group_max_size_reached,
    "FencedInstanceIdError": ErrorCode.fenced_instance_id,
    "InvalidRecordError": ErrorCode.invalid_record,
    "UnstableOffsetCommitError": ErrorCode.unstable_offset_commit,
}
for _name, _code in _COMMON.items():
    globals()[_name] = _define(_name, _code)
    __all__.append(_name)


class ProducerFenced(KafkaError, codes=(ErrorCode.producer_fenced,)):
    """Another producer with the same transactional id took over (PRODUCER_FENCED)."""


# --- failures that are not error codes ---------------------------------------------------------


class ClientError(Exception):
    """Base of client-side failures."""

    retriable = False


class ConnectionLost(ClientError):
    """The connection closed (or failed) before the response arrived."""

    retriable = True


class RequestTimedOut(ClientError):
    """No response within the request timeout; the connection is closed since its stream is lost."""

    retriable = True


class NoBrokersAvailable(ClientError):
    """None of the bootstrap servers (or known brokers) accepted a connection."""

    retriable = True


class ClientClosed(ClientError):
    """The producer/consumer/admin client is closed."""


class UnsupportedApi(ClientError):
    """The broker does not support any version of an API this client implements."""

    def __init__(self, api_key: int, broker_range: tuple[int, int] | None) -> None:
        super().__init__(f"API key {api_key}: broker range {broker_range} has no version this client speaks")
        self.api_key = api_key
        self.broker_range = broker_range


class CorruptRecord(ClientError):
    """A fetched batch failed its CRC-32C or could not be decoded.

    The message names the offset; `topic`, `partition` and `offset` (the damaged batch's base
    offset) say where for programs, None when unknown. The consumer fills in the partition,
    which the batch parser does not know."""

    def __init__(self, message: str, *, topic: str | None = None, partition: int | None = None,
                 offset: int | None = None) -> None:
        super().__init__(message)
        self.topic = topic
        self.partition = partition
        self.offset = offset

    @property
    def reason(self) -> str:
        """What is wrong, without where."""
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        if self.topic is None:
            return self.reason
        return f"{self.topic}-{self.partition}: {self.reason}"


class InvalidClientConfig(ClientError, ValueError):
    """A client setting has a bad value, or a file it names cannot be used; the message names
    the Kafka property."""


# --- authentication ----------------------------------------------------------------------------


class AuthenticationError(ClientError):
    """The broker and the client could not authenticate each other (TLS or SASL). Not
    retriable: the same settings fail the same way, so a client that meets it while starting
    raises it instead of trying again."""


class SaslAuthenticationFailedError(KafkaError, AuthenticationError, codes=(ErrorCode.sasl_authentication_failed,)):
    """Kafka error 58 (SASL_AUTHENTICATION_FAILED): wrong user or password, or (SCRAM) a broker
    whose signature shows it does not know the password. The message is the broker's."""


class UnsupportedSaslMechanismError(KafkaError, AuthenticationError, codes=(ErrorCode.unsupported_sasl_mechanism,)):
    """Kafka error 33 (UNSUPPORTED_SASL_MECHANISM): the listener does not enable sasl.mechanism."""


class IllegalSaslStateError(KafkaError, AuthenticationError, codes=(ErrorCode.illegal_sasl_state,)):
    """Kafka error 34 (ILLEGAL_SASL_STATE): SASL on a listener without it (a SASL_* client talking
    to a PLAINTEXT or SSL listener)."""


class SslAuthenticationError(AuthenticationError):
    """The TLS handshake failed: the broker's certificate is not trusted (ssl.ca.location) or does
    not name the host (ssl.endpoint.identification.algorithm), or the broker refused the client's
    certificate. The message says which, in OpenSSL's words."""


__all__ += ["AuthenticationError", "ClientError", "IllegalSaslStateError", "InvalidClientConfig",
            "SaslAuthenticationFailedError", "SslAuthenticationError", "UnsupportedSaslMechanismError"]
