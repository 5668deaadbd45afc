//! The restart policy ractor leaves to us: a supervisor that starts its children
//! from factories, restarts a child that fails or stops unasked (exponential
//! backoff), gives up after too many restarts within a window (meltdown: the
//! supervisor stops, which the app treats as fatal), counts restarts by actor and
//! reason, and on shutdown stops its children in reverse start order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use ractor::{
    Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent,
};

use crate::config::SupervisorSettings;
use crate::domain::backoff;
use crate::telemetry;

/// The `reason` label values of `rewardflow_actor_restarts_total`.
pub const RESTART_REASONS: [&str; 3] = ["failed", "stopped", "spawn_failed"];

/// A child's exit as a supervision event tells it: its cell, the `reason` label
/// of its restart ([`RESTART_REASONS`]) and what it said (its error, or why it
/// stopped). `None` for events that are not exits.
pub fn exit_of(event: SupervisionEvent) -> Option<(ActorCell, &'static str, String)> {
    match event {
        SupervisionEvent::ActorFailed(cell, err) => Some((cell, "failed", err.to_string())),
        SupervisionEvent::ActorTerminated(cell, _, why) => {
            Some((cell, "stopped", why.unwrap_or_default()))
        }
        _ => None,
    }
}

/// Spawns a child linked to the given supervisor and returns its cell.
pub type SpawnFn =
    Arc<dyn Fn(ActorCell) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> + Send + Sync>;

/// How to (re)start one child.
#[derive(Clone)]
pub struct ChildSpec {
    /// Actor kind: the `actor` label of the restart metric; unique per supervisor.
    pub kind: &'static str,
    pub spawn: SpawnFn,
}

impl ChildSpec {
    /// A child whose arguments are rebuilt by `args` at every (re)start, so it reloads
    /// its state from the source of truth in `pre_start`.
    pub fn new<A, F>(kind: &'static str, actor: A, args: F) -> Self
    where
        A: Actor + Clone,
        F: Fn() -> A::Arguments + Send + Sync + 'static,
    {
        Self::published(kind, actor, args, ActorSlot::default())
    }

    /// Like [`ChildSpec::new`], and every (re)started actor is published in `slot`,
    /// so that others always reach the current incarnation.
    pub fn published<A, F>(kind: &'static str, actor: A, args: F, slot: ActorSlot<A::Msg>) -> Self
    where
        A: Actor + Clone,
        F: Fn() -> A::Arguments + Send + Sync + 'static,
    {
        let args = Arc::new(args);
        let spawn: SpawnFn = Arc::new(move |supervisor| {
            let actor = actor.clone();
            let args = args.clone();
            let slot = slot.clone();
            Box::pin(async move {
                let (child, _join) = Actor::spawn_linked(None, actor, args(), supervisor).await?;
                slot.set(child.clone());
                Ok(child.get_cell())
            })
        });
        Self { kind, spawn }
    }
}

/// The current incarnation of a supervised actor.
pub struct ActorSlot<M: ractor::Message>(Arc<std::sync::RwLock<Option<ActorRef<M>>>>);

impl<M: ractor::Message> Clone for ActorSlot<M> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<M: ractor::Message> Default for ActorSlot<M> {
    fn default() -> Self {
        Self(Arc::new(std::sync::RwLock::new(None)))
    }
}

impl<M: ractor::Message> ActorSlot<M> {
    /// The running actor, if it has been started.
    pub fn get(&self) -> Option<ActorRef<M>> {
        self.0.read().expect("slot lock").clone()
    }

    fn set(&self, actor: ActorRef<M>) {
        *self.0.write().expect("slot lock") = Some(actor);
    }
}

#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub meltdown_max_restarts: usize,
    pub meltdown_window: Duration,
}

impl From<&SupervisorSettings> for RestartPolicy {
    fn from(s: &SupervisorSettings) -> Self {
        Self {
            backoff_initial: Duration::from_millis(s.restart_backoff_initial_ms),
            backoff_max: Duration::from_millis(s.restart_backoff_max_ms),
            meltdown_max_restarts: s.meltdown_max_restarts as usize,
            meltdown_window: Duration::from_secs(s.meltdown_window_secs),
        }
    }
}

impl RestartPolicy {
    /// Delay before the n-th restart within the window (n ≥ 1): initial · 2^(n−1), capped.
    pub fn backoff(&self, n: usize) -> Duration {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        backoff::doubling(self.backoff_initial, self.backoff_max, n)
    }
}

pub enum SupervisorMsg {
    /// Internal: the backoff of a child has elapsed.
    Restart { kind: &'static str },
    /// The current cell of a child, if it is running.
    Child(&'static str, RpcReplyPort<Option<ActorCell>>),
    /// Restart counts by child kind, for health and tests.
    Status(RpcReplyPort<SupervisorStatus>),
}

#[derive(Debug, Clone, Default)]
pub struct SupervisorStatus {
    /// (kind, running, restarts since start)
    pub children: Vec<(&'static str, bool, u64)>,
}

pub struct SupervisorArgs {
    pub policy: RestartPolicy,
    pub children: Vec<ChildSpec>,
}

struct Child {
    spec: ChildSpec,
    cell: Option<ActorCell>,
    recent_restarts: VecDeque<Instant>,
    total_restarts: u64,
}

pub struct SupervisorState {
    policy: RestartPolicy,
    children: Vec<Child>,
}

#[derive(Clone, Copy, Default)]
pub struct Supervisor;

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut children = Vec::with_capacity(args.children.len());
        for spec in &args.children {
            for reason in RESTART_REASONS {
                telemetry::start_counter(
                    telemetry::ACTOR_RESTARTS_TOTAL,
                    &[("actor", spec.kind), ("reason", reason)],
                );
            }
        }
        for spec in args.children {
            let cell = (spec.spawn)(myself.get_cell())
                .await
                .map_err(|err| format!("starting {}: {err}", spec.kind))?;
            children.push(Child {
                spec,
                cell: Some(cell),
                recent_restarts: VecDeque::new(),
                total_restarts: 0,
            });
        }
        Ok(SupervisorState {
            policy: args.policy,
            children,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Reverse start order: later children may depend on earlier ones.
        for child in state.children.iter_mut().rev() {
            if let Some(cell) = child.cell.take() {
                let _ = cell.stop_and_wait(Some("shutdown".into()), None).await;
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Restart { kind } => {
                let Some(child) = state.children.iter_mut().find(|c| c.spec.kind == kind) else {
                    return Ok(());
                };
                match (child.spec.spawn)(myself.get_cell()).await {
                    Ok(cell) => {
                        tracing::info!(actor = kind, "actor restarted");
                        child.cell = Some(cell);
                    }
                    Err(err) => {
                        tracing::error!(actor = kind, error = %err, "actor restart failed");
                        schedule_restart(&myself, state, kind, "spawn_failed");
                    }
                }
            }
            SupervisorMsg::Child(kind, reply) => {
                let cell = state
                    .children
                    .iter()
                    .find(|c| c.spec.kind == kind)
                    .and_then(|c| c.cell.clone());
                let _ = reply.send(cell);
            }
            SupervisorMsg::Status(reply) => {
                let children = state
                    .children
                    .iter()
                    .map(|c| (c.spec.kind, c.cell.is_some(), c.total_restarts))
                    .collect();
                let _ = reply.send(SupervisorStatus { children });
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some((cell, reason, detail)) = exit_of(event) else {
            return Ok(());
        };
        let Some(kind) = state
            .children
            .iter_mut()
            .find(|c| c.cell.as_ref().is_some_and(|c| c.get_id() == cell.get_id()))
            .map(|c| {
                c.cell = None;
                c.spec.kind
            })
        else {
            return Ok(());
        };
        tracing::warn!(actor = kind, reason, detail = %detail, "supervised actor exited");
        schedule_restart(&myself, state, kind, reason);
        Ok(())
    }
}

/// Counts the restart, and either schedules it after its backoff or, past the
/// meltdown limit, stops the supervisor.
fn schedule_restart(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    kind: &'static str,
    reason: &'static str,
) {
    let policy = state.policy;
    let Some(child) = state.children.iter_mut().find(|c| c.spec.kind == kind) else {
        return;
    };
    let now = Instant::now();
    while child
        .recent_restarts
        .front()
        .is_some_and(|t| now.duration_since(*t) > policy.meltdown_window)
    {
        child.recent_restarts.pop_front();
    }
    child.recent_restarts.push_back(now);
    child.total_restarts += 1;
    metrics::counter!(telemetry::ACTOR_RESTARTS_TOTAL, "actor" => kind, "reason" => reason)
        .increment(1);
    if child.recent_restarts.len() > policy.meltdown_max_restarts {
        tracing::error!(
            actor = kind,
            restarts = child.recent_restarts.len(),
            "meltdown: the actor keeps failing; stopping its supervisor"
        );
        myself.stop(Some(format!("meltdown of {kind}")));
        return;
    }
    let delay = policy.backoff(child.recent_restarts.len());
    myself.send_after(delay, move || SupervisorMsg::Restart { kind });
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::ActorStatus;
    use tokio::sync::mpsc;

    /// Fails on `Crash`, reports each start on a channel.
    #[derive(Clone)]
    struct Flaky {
        started: mpsc::UnboundedSender<()>,
    }

    enum FlakyMsg {
        Crash,
    }

    impl Actor for Flaky {
        type Msg = FlakyMsg;
        type State = ();
        type Arguments = ();

        async fn pre_start(&self, _: ActorRef<FlakyMsg>, _: ()) -> Result<(), ActorProcessingErr> {
            let _ = self.started.send(());
            Ok(())
        }

        async fn handle(
            &self,
            _: ActorRef<FlakyMsg>,
            msg: FlakyMsg,
            _: &mut (),
        ) -> Result<(), ActorProcessingErr> {
            match msg {
                FlakyMsg::Crash => panic!("boom"),
            }
        }
    }

    fn policy(max: usize) -> RestartPolicy {
        RestartPolicy {
            backoff_initial: Duration::from_millis(1),
            backoff_max: Duration::from_millis(4),
            meltdown_max_restarts: max,
            meltdown_window: Duration::from_secs(60),
        }
    }

    async fn start(
        max: usize,
    ) -> (
        ActorRef<SupervisorMsg>,
        tokio::task::JoinHandle<()>,
        mpsc::UnboundedReceiver<()>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let spec = ChildSpec::new("flaky", Flaky { started: tx }, || ());
        let (sup, join) = Actor::spawn(
            None,
            Supervisor,
            SupervisorArgs {
                policy: policy(max),
                children: vec![spec],
            },
        )
        .await
        .unwrap();
        (sup, join, rx)
    }

    async fn crash_child(sup: &ActorRef<SupervisorMsg>) {
        let cell = ractor::call!(sup, SupervisorMsg::Child, "flaky")
            .unwrap()
            .expect("child running");
        let child: ActorRef<FlakyMsg> = cell.into();
        child.cast(FlakyMsg::Crash).unwrap();
    }

    #[tokio::test]
    async fn a_crashed_child_is_restarted_and_counted() {
        let (sup, _join, mut started) = start(5).await;
        started.recv().await.unwrap();
        crash_child(&sup).await;
        started.recv().await.expect("restarted");
        let status = ractor::call!(sup, SupervisorMsg::Status).unwrap();
        assert_eq!(status.children, vec![("flaky", true, 1)]);
        sup.stop_and_wait(None, None).await.unwrap();
    }

    #[tokio::test]
    async fn exits_carry_a_documented_reason_and_what_the_child_said() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let (actor, join) = Actor::spawn(None, Flaky { started: tx }, ()).await.unwrap();
        let cell = || actor.get_cell();
        let failed = exit_of(SupervisionEvent::ActorFailed(cell(), "boom".into()));
        let stopped = exit_of(SupervisionEvent::ActorTerminated(
            cell(),
            None,
            Some("asked".into()),
        ));
        let (_, failed, said) = failed.expect("an exit");
        assert_eq!((failed, said.as_str()), ("failed", "boom"));
        let (_, stopped, said) = stopped.expect("an exit");
        assert_eq!((stopped, said.as_str()), ("stopped", "asked"));
        assert!(RESTART_REASONS.contains(&failed) && RESTART_REASONS.contains(&stopped));
        assert!(exit_of(SupervisionEvent::ActorStarted(cell())).is_none());
        actor.stop(None);
        join.await.unwrap();
    }

    #[tokio::test]
    async fn too_many_restarts_stop_the_supervisor() {
        let (sup, join, mut started) = start(2).await;
        started.recv().await.unwrap();
        for _ in 0..2 {
            crash_child(&sup).await;
            started.recv().await.expect("restarted");
        }
        crash_child(&sup).await;
        join.await.unwrap();
        assert_eq!(sup.get_status(), ActorStatus::Stopped);
    }
}
