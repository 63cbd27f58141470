//! What bounds a connection and a request, whoever the client is (design §3.4): a deadline
//! for the first byte after the handshake ([`FirstByteDeadline`]), an idle clock per
//! connection ([`Activity`]), and the limit on requests in flight per listener
//! ([`InFlight`], kube-apiserver's `--max-requests-inflight`). The connection cap itself is
//! a semaphore in the accept loop.
//!
//! Why these and not hyper's own: hyper's HTTP/2 handshake and hyper-util's version detection
//! (connections without ALPN) have no timer, so a client that completes TLS and sends nothing
//! would keep its connection forever; HTTP/2 has no idle timeout at all.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Paths never refused by the in-flight limit, so probes keep answering under load.
pub fn exempt_from_inflight_limit(path: &str) -> bool {
    ["/healthz", "/livez", "/readyz"].iter().any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// IO whose reads fail with `TimedOut` if the peer has sent no byte within the deadline.
/// Once a byte has arrived it is a plain pass-through. A zero timeout means no deadline.
pub struct FirstByteDeadline<I> {
    io: I,
    deadline: Option<Pin<Box<Sleep>>>,
    timeouts: Counter,
}

impl<I> FirstByteDeadline<I> {
    pub fn new(io: I, timeout: Duration, timeouts: Counter) -> Self {
        FirstByteDeadline {
            io,
            deadline: (!timeout.is_zero()).then(|| Box::pin(tokio::time::sleep(timeout))),
            timeouts,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FirstByteDeadline<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let expired = match this.deadline.as_mut() {
                    Some(deadline) => deadline.as_mut().poll(cx).is_ready(),
                    None => false,
                };
                if !expired {
                    return Poll::Pending;
                }
                this.deadline = None;
                this.timeouts.inc();
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within the first-byte deadline",
                )))
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FirstByteDeadline<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Connections open per client address. Addresses are compared as IPs (IPv4-mapped IPv6
/// as IPv4); the map holds only addresses with a connection open, so it is bounded by the
/// connection cap.
#[derive(Debug, Clone)]
pub struct PerIp {
    limit: usize,
    open: OpenPerIp,
}

type OpenPerIp = Arc<Mutex<HashMap<IpAddr, usize>>>;

impl PerIp {
    /// `limit` 0: no limit (nothing is tracked).
    pub fn new(limit: usize) -> PerIp {
        PerIp {
            limit,
            open: Arc::default(),
        }
    }

    /// A slot for one more connection from `ip`, or `None` when it has `limit` open.
    pub fn try_acquire(&self, ip: IpAddr) -> Option<PerIpSlot> {
        if self.limit == 0 {
            return Some(PerIpSlot(None));
        }
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(PerIpSlot(Some((self.open.clone(), ip))))
    }
}

/// Holds one connection's place in [`PerIp`] until dropped.
#[derive(Debug)]
pub struct PerIpSlot(Option<(OpenPerIp, IpAddr)>);

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        if let Some((open, ip)) = self.0.take() {
            let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = open.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&ip);
                }
            }
        }
    }
}

/// A connection's requests in flight and when the last one ended: the idle clock. A request
/// counts from when hyper hands it over until its response body is sent.
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    last_end: Mutex<Instant>,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            last_end: Mutex::new(Instant::now()),
        })
    }

    /// Marks a request in flight until the guard is dropped.
    pub fn start(self: &Arc<Self>) -> ActiveRequest {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        ActiveRequest(self.clone())
    }

    /// Since when nothing has been in flight; `None` while a request is.
    pub fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        Some(*self.last_end.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

pub struct ActiveRequest(Arc<Activity>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        *self.0.last_end.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Requests in flight over all connections of a listener. `None` permits: no limit.
#[derive(Debug, Clone)]
pub struct InFlight {
    permits: Option<Arc<Semaphore>>,
    gauge: Gauge,
    rejected: Counter,
}

impl InFlight {
    pub fn new(limit: usize, gauge: Gauge, rejected: Counter) -> InFlight {
        InFlight {
            permits: (limit > 0).then(|| Arc::new(Semaphore::new(limit))),
            gauge,
            rejected,
        }
    }

    /// A slot for one request, or `None` when the limit is reached (the caller answers 429).
    pub fn try_admit(&self) -> Option<Admitted> {
        let permit = match &self.permits {
            None => None,
            Some(s) => match s.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    self.rejected.inc();
                    return None;
                }
            },
        };
        self.gauge.inc();
        Some(Admitted {
            _permit: permit,
            gauge: self.gauge.clone(),
        })
    }
}

/// Holds a request's in-flight slot.
pub struct Admitted {
    _permit: Option<OwnedSemaphorePermit>,
    gauge: Gauge,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// A response body that holds its request's slot and activity mark until it is sent (or
/// dropped), so a client that reads slowly keeps counting against the limits.
pub struct Guarded<B> {
    inner: B,
    _admitted: Option<Admitted>,
    _active: ActiveRequest,
}

impl<B> Guarded<B> {
    pub fn new(inner: B, admitted: Option<Admitted>, active: ActiveRequest) -> Self {
        Guarded {
            inner,
            _admitted: admitted,
            _active: active,
        }
    }
}

impl<B> http_body::Body for Guarded<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn health_paths_are_exempt() {
        for p in [
            "/healthz",
            "/livez",
            "/readyz",
            "/readyz/ping",
            "/healthz/log",
        ] {
            assert!(exempt_from_inflight_limit(p), "{p}");
        }
        for p in [
            "/",
            "/apis",
            "/healthzz",
            "/readyzfoo",
            "/metrics",
            "/apis/healthz",
        ] {
            assert!(!exempt_from_inflight_limit(p), "{p}");
        }
    }

    #[tokio::test]
    async fn a_silent_peer_times_out_and_a_talking_one_never_does() {
        let counter = Counter::default();
        let (client, server) = tokio::io::duplex(64);
        let mut silent =
            FirstByteDeadline::new(server, Duration::from_millis(100), counter.clone());
        let mut buf = [0u8; 8];
        let err = silent.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(counter.get(), 1);
        drop(client);

        let (mut client, server) = tokio::io::duplex(64);
        let mut talking =
            FirstByteDeadline::new(server, Duration::from_millis(100), counter.clone());
        client.write_all(b"G").await.unwrap();
        assert_eq!(talking.read(&mut buf).await.unwrap(), 1);
        // Past the deadline, reads just wait for data.
        let wait = tokio::time::timeout(Duration::from_millis(500), talking.read(&mut buf)).await;
        assert!(
            wait.is_err(),
            "a read after the first byte must not time out"
        );
        client.write_all(b"ET").await.unwrap();
        assert_eq!(talking.read(&mut buf).await.unwrap(), 2);
        assert_eq!(counter.get(), 1);
    }

    #[tokio::test]
    async fn the_idle_clock_runs_only_without_requests() {
        let before = Instant::now();
        let activity = Activity::new();
        let first = activity.idle_since().expect("idle from the start");
        assert!(first >= before && first <= Instant::now());
        let a = activity.start();
        let b = activity.start();
        assert_eq!(activity.idle_since(), None);
        drop(a);
        assert_eq!(activity.idle_since(), None);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let ended = Instant::now();
        drop(b);
        // The clock restarted when the last request ended.
        let since = activity.idle_since().expect("idle again");
        assert!(since >= ended && since > first);
    }

    #[test]
    fn per_ip_slots_are_counted_per_address_and_freed() {
        let per_ip = PerIp::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let a_mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = per_ip.try_acquire(a).expect("first");
        let second = per_ip.try_acquire(a_mapped).expect("second, same address");
        assert!(per_ip.try_acquire(a).is_none());
        let other = per_ip.try_acquire(b).expect("another address");
        drop(first);
        let third = per_ip.try_acquire(a).expect("a slot freed");
        drop((second, third, other));
        assert!(
            per_ip.open.lock().unwrap().is_empty(),
            "nothing left behind"
        );
        let unlimited = PerIp::new(0);
        let held: Vec<_> = (0..1000).map(|_| unlimited.try_acquire(a)).collect();
        assert!(held.iter().all(Option::is_some));
    }

    #[test]
    fn in_flight_admits_up_to_the_limit_and_counts_refusals() {
        let (gauge, rejected) = (Gauge::default(), Counter::default());
        let limit = InFlight::new(2, gauge.clone(), rejected.clone());
        let a = limit.try_admit().expect("first");
        let b = limit.try_admit().expect("second");
        assert!(limit.try_admit().is_none());
        assert_eq!((gauge.get(), rejected.get()), (2, 1));
        drop(a);
        let c = limit.try_admit().expect("a slot freed");
        drop((b, c));
        assert_eq!(gauge.get(), 0);

        let unlimited = InFlight::new(0, Gauge::default(), Counter::default());
        let held: Vec<_> = (0..10_000).map(|_| unlimited.try_admit()).collect();
        assert!(held.iter().all(Option::is_some));
    }
}
