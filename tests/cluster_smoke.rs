//! The local control plane works as the product needs it: CRDs, custom
//! resources, the status subresource with server-side apply, and RBAC.

mod common;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

fn widget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.smoke.imagejob.test"},
        "spec": {
            "group": "smoke.imagejob.test",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                    "status": {"type": "object", "properties": {"phase": {"type": "string"}}}
                }}}
            }]
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn crd_custom_resource_and_status_ssa() {
    let client = common::client().await;
    common::install_crd(&client, &widget_crd()).await;
    let ns = common::TestNamespace::new(&client, "smoke").await;
    let gvk = GroupVersionKind::gvk("smoke.imagejob.test", "v1", "Widget");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "widgets");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns.name, &ar);

    let mut w = DynamicObject::new("w1", &ar);
    w.data = json!({"spec": {"size": 3}});
    api.create(&PostParams::default(), &w).await.unwrap();
    let got = api.get("w1").await.unwrap();
    assert_eq!(got.data["spec"]["size"], 3);

    let status = json!({"apiVersion": "smoke.imagejob.test/v1", "kind": "Widget", "status": {"phase": "Ready"}});
    let pp = PatchParams::apply("smoke-test").force();
    api.patch_status("w1", &pp, &Patch::Apply(&status)).await.unwrap();
    let got = api.get_status("w1").await.unwrap();
    assert_eq!(got.data["status"]["phase"], "Ready");
    // The status subresource ignores spec changes and vice versa.
    assert_eq!(got.data["spec"]["size"], 3);
    ns.cleanup().await;
}

#[tokio::test]
async fn rbac_denies_an_unprivileged_service_account() {
    use k8s_openapi::api::authorization::v1::SubjectAccessReview;
    let client = common::client().await;
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {"user": "system:serviceaccount:default:nobody",
                 "resourceAttributes": {"verb": "list", "resource": "secrets", "namespace": "default"}}
    }))
    .unwrap();
    let api: Api<SubjectAccessReview> = Api::all(client);
    let answer = api.create(&PostParams::default(), &review).await.unwrap();
    assert!(!answer.status.unwrap().allowed, "RBAC must deny an unbound service account");
}
