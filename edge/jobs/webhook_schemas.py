"""Bodies of the webhook operations: the tenant's default webhook, a job's delivery log,
redelivery."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, model_validator

from edge.jobs.schemas import Delivery, WebhookEvent, _Strict


class DefaultWebhook(BaseModel):
    url: str = Field(
        description="The URL without its query string or fragment (shown as `?…`): the "
        "webhooks go to the URL as given, tokens included"
    )
    events: list[WebhookEvent]
    updated_at: str


class SentWebhook(BaseModel):
    message_id: str = Field(description="Its `webhook-id`; name it to redeliver this one")
    event: WebhookEvent
    sent_at: str = Field(description="When it was first attempted")


class DeliveryLog(BaseModel):
    deliveries: list[Delivery] = Field(description="The last 50 attempts, oldest first")
    sent: list[SentWebhook] = Field(
        description="The last webhook of each event the job sent: what can be redelivered"
    )


class RedeliverRequest(_Strict):
    """Which webhook to send again; with neither field, the last one the job sent."""

    message_id: Annotated[str, Field(min_length=1, max_length=300)] | None = None
    event: WebhookEvent | None = None

    @model_validator(mode="after")
    def _one_at_most(self) -> RedeliverRequest:
        if self.message_id is not None and self.event is not None:
            raise ValueError("name the webhook by `message_id` or by `event`, not both")
        return self


class Redelivery(BaseModel):
    job_id: str
    message_id: str = Field(description="The same `webhook-id` as the original webhook")
    event: WebhookEvent
    queued_at: str
