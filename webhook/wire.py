"""The AdmissionReview answers pullcheck sends the apiserver (/validate and /mutate), as types."""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict


class Status(TypedDict):
    metadata: dict[str, str]
    status: Literal["Failure"]
    reason: Literal["Forbidden"]
    code: Literal[403]
    message: str


class AdmissionResponse(TypedDict):
    uid: str
    allowed: bool
    status: NotRequired[Status]
    warnings: NotRequired[list[str]]
    auditAnnotations: NotRequired[dict[str, str]]
    patchType: NotRequired[str]  # /mutate only
    patch: NotRequired[str]


class AdmissionReviewAnswer(TypedDict):
    apiVersion: str
    kind: Literal["AdmissionReview"]
    response: AdmissionResponse
