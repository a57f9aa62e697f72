//! Code that would crash a recursive parser or walk: too big, or nested too
//! deeply. Each is refused with a clear answer and the server lives on.

use gemini_sim::Scripted;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{expect_status, spawn_app_with_sim, start_sim, two_emas};

const GENERATE: &str = "/api/strategies/api/generate_code/";
const TEMPLATES: &str = "/api/strategies/templates/";
const EXECUTABLE: &str = "/api/strategies/api/generate_executable_code/";

/// The review's reproduction: 100,000 nested `not`s overflowed a tokio
/// worker's stack and aborted the process.
#[tokio::test]
async fn oversized_code_is_a_400_naming_its_field() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("nester").await;
    let token = Some(user.access.as_str());

    let huge = format!("x = {}x", "not ".repeat(100_000));
    let error = expect_status(
        app.post(TEMPLATES, token, &json!({"name": "Deep", "template_code": huge})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(error["template_code"][0].as_str().unwrap().contains("65536"), "{error}");

    let error = expect_status(
        app.post("/api/strategies/strategies/", token, &json!({"name": "Deep", "strategy_code": huge})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(error["strategy_code"][0].as_str().unwrap().contains("65536"), "{error}");
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn deeply_nested_code_fails_its_checks_without_harming_the_server() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("nester").await;
    let token = Some(user.access.as_str());

    // Each fits the size bound and nests far past CPython's 200 levels.
    let deep = [
        format!("x = {}x\n", "not ".repeat(16_000)),
        format!("x = {}1\n", "-".repeat(60_000)),
        format!("x = {}1\n", "1+".repeat(30_000)),
        format!("x = {}a\n", "a.".repeat(30_000)),
        format!("x = {}1{}\n", "(".repeat(20_000), ")".repeat(20_000)),
        format!("x = {}1{}\n", "[".repeat(20_000), "]".repeat(20_000)),
        format!("x = {}1\n", "lambda: ".repeat(7_000)),
    ];
    for (n, code) in deep.iter().enumerate() {
        let template = expect_status(
            app.post(TEMPLATES, token, &json!({"name": format!("Deep {n}"), "template_code": code})).await,
            StatusCode::CREATED,
        )
        .await;
        let answer = expect_status(
            app.post(
                GENERATE,
                token,
                &json!({"strategy_description": "a", "template_id": template["id"], "use_gemini": false}),
            )
            .await,
            StatusCode::OK,
        )
        .await;
        let checks = &answer["metadata"]["static_checks"];
        assert_eq!(checks["passed"], false, "case {n}: {checks}");
        let message = checks["problems"][0]["message"].as_str().unwrap();
        assert!(message.starts_with("SyntaxError:"), "case {n}: {message}");
        assert!(message.contains("nest"), "case {n}: {message}");
    }

    // Gemini's own answer goes through the same checker: a failed check the
    // fix loop gets to work on, not a 400 and not a crash.
    let nested = format!("```python\nx = {}x\n```\n", "not ".repeat(16_000));
    sim.sim.script([Scripted::Text { text: nested }]);
    let answer =
        expect_status(app.post(EXECUTABLE, token, &json!({"canonical_json": two_emas("Hold")})).await, StatusCode::OK)
            .await;
    let checks = &answer["static_checks"];
    assert_eq!(answer["success"], false);
    let message = checks["problems"][0]["message"].as_str().unwrap();
    assert!(message.starts_with("SyntaxError:") && message.contains("nest"), "{checks}");
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
}
