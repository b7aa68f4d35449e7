//! HTTP backend headers whose values come from environment variables. A test binary of its
//! own, with one test, because setting a variable is only sound while no other thread
//! might read the environment.

mod common;

use common::receiver::HttpReceiver;
use common::*;

#[test]
fn headers_from_environment_variables_arrive() {
    let var = format!("TEST_TALLYD_TOKEN_{}", std::process::id());
    // SAFETY: this binary runs this one test, and the variable is set before the runtime,
    // the agent or the receiver start any thread that could read the environment.
    unsafe { std::env::set_var(&var, "s3cret-from-env") };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(send_one_record(&var));
}

async fn send_one_record(var: &str) {
    let receiver = HttpReceiver::start("127.0.0.1:0");
    let toml = format!(
        "[server]\nudp = [\"127.0.0.1:0\"]\n[aggregation]\nflush_interval_ms = 60000\n\
         [[backends]]\nkind = \"http\"\nurl = {:?}\n\
         headers = {{ Authorization = \"Bearer ${{{var}}}\", X-Team = \"metrics\" }}\n",
        receiver.url()
    );
    let agent = start(&toml).await;
    agent.send(&["env.hits:1|c"]);
    agent.wait_lines(1).await;
    agent.flush().await;
    let request = receiver.next();
    assert_eq!(
        request.header("Authorization"),
        Some("Bearer s3cret-from-env")
    );
    assert_eq!(request.header("X-Team"), Some("metrics"));
    agent.running.shutdown().await;
}
