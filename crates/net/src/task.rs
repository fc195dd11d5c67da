use tokio::task::JoinHandle;

/// A task that is aborted when its owner drops this handle: no task outlives its owner.
pub(crate) struct AbortOnDrop<T>(pub(crate) JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
