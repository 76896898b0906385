//! The API's accept loop: each TCP connection, plain or wrapped in TLS, served by hyper with the
//! API's warp filter as its service, until shutdown.
//!
//! Our own loop rather than `warp::serve` because warp 0.4.3 cannot serve TLS (its
//! `Server::tls` is an empty stub and its `Accept` trait is private); plain HTTP goes through the
//! same loop so both schemes behave alike. A connection whose handshake fails (a plain-HTTP
//! client on the TLS port, a client that does not trust our certificate, a scanner) is closed
//! and logged at debug: it never reaches the API and never stops the loop.
//!
//! Shutdown: the loop stops accepting, every open connection is asked to close once its
//! current request is answered (hyper's graceful shutdown; an idle keep-alive connection closes
//! at once), and [`serve`] returns when all are closed. A handshake still under way is
//! dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::{routes, AppState};

/// How long a client may take over its TLS handshake before it is dropped: without a limit,
/// connections that never finish it would pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the loop waits after an `accept` failure other than a dropped connection (EMFILE,
/// ENFILE, ENOBUFS): retrying at once would spin while nothing has been freed.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves the API on `listener` (through `tls` when given) until `shutdown` fires, then lets
/// open connections finish their requests; returns once they are closed.
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let service = warp::service(routes(state));
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                accept_failed(e, &shutdown).await;
                continue;
            }
        };
        // Answers are small and written whole; Nagle would only hold a TLS record's tail back
        // for the client's delayed ACK.
        let _ = tcp.set_nodelay(true);
        let watcher = graceful.watcher();
        let service = service.clone();
        let (tls, shutdown) = (tls.clone(), shutdown.clone());
        tokio::spawn(async move {
            let Some(io) = secure(tcp, tls.as_ref(), peer, &shutdown).await else {
                return;
            };
            let builder = auto::Builder::new(TokioExecutor::new());
            let service = TowerToHyperService::new(service);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            if let Err(e) = watcher.watch(conn).await {
                // A client that hung up mid-request, or sent something that is not HTTP.
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A connection's byte stream, plain or TLS: boxed, so one hyper connection type serves both
/// (a virtual call per read or write costs nothing next to the system call under it).
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// `tcp` as the stream to speak HTTP on: itself without `tls`, else after the server side of
/// the handshake. `None` (logged at debug) when the handshake fails, takes longer than
/// [`HANDSHAKE_TIMEOUT`], or shutdown comes first.
async fn secure(
    tcp: TcpStream,
    tls: Option<&TlsAcceptor>,
    peer: SocketAddr,
    shutdown: &CancellationToken,
) -> Option<Box<dyn Io>> {
    let Some(acceptor) = tls else {
        return Some(Box::new(tcp));
    };
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
    let outcome = tokio::select! {
        outcome = handshake => outcome,
        () = shutdown.cancelled() => return None,
    };
    match outcome {
        Ok(Ok(stream)) => Some(Box::new(stream)),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed; connection closed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "no TLS handshake within {HANDSHAKE_TIMEOUT:?}; connection closed");
            None
        }
    }
}

/// After a failed `accept`: a connection reset before we took it is nothing; anything else
/// (out of file descriptors) is logged and waited out, unless shutdown comes first.
async fn accept_failed(e: std::io::Error, shutdown: &CancellationToken) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "cannot accept a connection; retrying");
    tokio::select! {
        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
        () = shutdown.cancelled() => {}
    }
}
