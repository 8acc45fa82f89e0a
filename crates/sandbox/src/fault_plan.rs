//! The one plan every simulator follows when an injected fault fires: answer at once (an
//! error status, a proxy's HTML page, or nothing for minutes), or handle the request after a
//! delay and then spoil its answer (cut it, or lose it). A simulator supplies only the
//! answers in its ERP's dialect ([`FaultAnswers`]) and decides where a delay is waited out.

use crate::faults::{Injection, Interrupt};
use crate::problem::Reply;
use axum::http::StatusCode;
use std::time::Duration;

/// How long a timeout fault ([`Fault::Timeout`](crate::faults::Fault::Timeout)) keeps a
/// request unanswered: far beyond any client timeout the connectors use (30 s by default),
/// so the client always gives up first.
const TIMEOUT_FAULT_HOLD: Duration = Duration::from_secs(300);

/// How an injected fault changes the answer to a request that was handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    AsIs,
    /// Cut the body so it is not valid JSON
    /// ([`Fault::Malformed`](crate::faults::Fault::Malformed)).
    Truncate,
    /// Answer 500 instead: the ERP did the work, the client never learns it
    /// ([`Fault::DropResponse`](crate::faults::Fault::DropResponse)).
    Drop,
}

/// What an injected fault makes of one request, the same for every simulator.
#[derive(Debug)]
pub(crate) enum FaultPlan<R> {
    /// Answer this instead of handling the request.
    Answer(R),
    /// Handle the request, after waiting `latency` (where the simulator chooses: a write waits
    /// with its idempotency key held), then apply `outcome` to its answer.
    Handle {
        latency: Option<Duration>,
        outcome: Outcome,
    },
}

/// The answers one simulator gives, in its ERP's dialect, when a fault acts before handling.
pub(crate) trait FaultAnswers {
    type Reply: From<Reply>;
    /// An injected status, with what the ERP sends along (its error body, `Retry-After`).
    /// Records what the status means for the account, such as a 429 telling it to wait.
    fn status(&self, status: StatusCode, retry_after: Option<u64>) -> Self::Reply;
    /// An injected wait cut short because the sandbox is shutting down.
    fn shutting_down(&self) -> Self::Reply;
    /// What a reverse proxy in front of the ERP answers when the ERP is down: the same page
    /// whatever the ERP, as the proxy is not the ERP's.
    fn proxy_page(&self) -> Self::Reply {
        Reply::proxy_error_page().into()
    }
    /// A request held by a timeout fault whose client did not give up. No client sees it (it
    /// gave up minutes earlier), so by default the answer of a stopping sandbox.
    fn held_too_long(&self) -> Self::Reply {
        self.shutting_down()
    }
}

/// Turns the fault that matched a request (if any) into the plan for it, holding the request
/// first for a timeout fault.
pub(crate) async fn plan<A: FaultAnswers>(
    answers: &A,
    interrupt: &Interrupt,
    injection: Option<Injection>,
) -> FaultPlan<A::Reply> {
    let handle = |latency, outcome| FaultPlan::Handle { latency, outcome };
    match injection {
        None => handle(None, Outcome::AsIs),
        Some(Injection::Status {
            status,
            retry_after,
        }) => FaultPlan::Answer(answers.status(status, retry_after)),
        Some(Injection::Html) => FaultPlan::Answer(answers.proxy_page()),
        Some(Injection::Timeout) => {
            FaultPlan::Answer(if interrupt.sleep(TIMEOUT_FAULT_HOLD).await {
                answers.held_too_long()
            } else {
                answers.shutting_down()
            })
        }
        Some(Injection::Latency(delay)) => handle(Some(delay), Outcome::AsIs),
        Some(Injection::Malformed) => handle(None, Outcome::Truncate),
        Some(Injection::DropResponse) => handle(None, Outcome::Drop),
    }
}

/// Waits out a latency fault; the shutting-down answer if the sandbox stops meanwhile.
pub(crate) async fn pause<A: FaultAnswers>(
    answers: &A,
    interrupt: &Interrupt,
    latency: Option<Duration>,
) -> Result<(), A::Reply> {
    match latency {
        Some(delay) if !interrupt.sleep(delay).await => Err(answers.shutting_down()),
        _ => Ok(()),
    }
}

/// [`plan`] and [`pause`] at once, for a request that waits out its latency before it is
/// handled: the outcome to apply to its answer, or the answer to give instead.
pub(crate) async fn before_handling<A: FaultAnswers>(
    answers: &A,
    interrupt: &Interrupt,
    injection: Option<Injection>,
) -> Result<Outcome, A::Reply> {
    match plan(answers, interrupt, injection).await {
        FaultPlan::Answer(reply) => Err(reply),
        FaultPlan::Handle { latency, outcome } => {
            pause(answers, interrupt, latency).await.map(|()| outcome)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Words;

    /// Replies as text: a status, "stopping", or the proxy's page as "proxy 502".
    #[derive(Debug, PartialEq, Eq)]
    struct Text(String);

    impl From<Reply> for Text {
        fn from(reply: Reply) -> Self {
            assert!(String::from_utf8_lossy(&reply.body).contains("<html>"));
            Text(format!("proxy {}", reply.status.as_u16()))
        }
    }

    impl FaultAnswers for Words {
        type Reply = Text;
        fn status(&self, status: StatusCode, retry_after: Option<u64>) -> Text {
            Text(format!("{} {retry_after:?}", status.as_u16()))
        }
        fn shutting_down(&self) -> Text {
            Text("stopping".into())
        }
    }

    #[tokio::test]
    async fn every_simulator_gets_the_same_plan_for_a_fault() {
        let interrupt = Interrupt::default();
        let plan = |injection| plan(&Words, &interrupt, injection);
        let answer = |p: FaultPlan<Text>| match p {
            FaultPlan::Answer(Text(reply)) => Some(reply),
            FaultPlan::Handle { .. } => None,
        };
        let status = Injection::Status {
            status: StatusCode::TOO_MANY_REQUESTS,
            retry_after: Some(3),
        };
        assert_eq!(
            answer(plan(Some(status)).await).as_deref(),
            Some("429 Some(3)")
        );
        assert_eq!(
            answer(plan(Some(Injection::Html)).await).as_deref(),
            Some("proxy 502")
        );
        let handled = |p| match p {
            FaultPlan::Handle { latency, outcome } => Some((latency, outcome)),
            FaultPlan::Answer(_) => None,
        };
        let ms = Duration::from_millis(5);
        assert_eq!(handled(plan(None).await), Some((None, Outcome::AsIs)));
        assert_eq!(
            handled(plan(Some(Injection::Latency(ms))).await),
            Some((Some(ms), Outcome::AsIs))
        );
        assert_eq!(
            handled(plan(Some(Injection::Malformed)).await),
            Some((None, Outcome::Truncate))
        );
        assert_eq!(
            handled(plan(Some(Injection::DropResponse)).await),
            Some((None, Outcome::Drop))
        );
        assert_eq!(
            before_handling(&Words, &interrupt, Some(Injection::Latency(ms))).await,
            Ok(Outcome::AsIs)
        );
        // A shutting-down sandbox cuts held and delayed requests short.
        interrupt.fire();
        assert_eq!(
            answer(plan(Some(Injection::Timeout)).await).as_deref(),
            Some("stopping")
        );
        assert_eq!(
            before_handling(&Words, &interrupt, Some(Injection::Latency(ms))).await,
            Err(Text("stopping".to_owned()))
        );
    }
}
