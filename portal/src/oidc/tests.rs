use super::*;

fn config(amr: &[&str], acr: &[&str]) -> OidcConfig {
    let text = "issuer = \"https://login.contoso.example\"\nclient_id = \"c\"\n\
         redirect_url = \"https://reset.contoso.example/signin/callback\"\n\
         session_key_file = \"k\"\n";
    OidcConfig {
        required_amr: amr.iter().map(|s| s.to_string()).collect(),
        required_acr: acr.iter().map(|s| s.to_string()).collect(),
        ..toml::from_str(text).unwrap()
    }
}

#[test]
fn sign_in_returns_to_a_task_page_only() {
    assert_eq!(safe_next("/reset"), "/reset");
    assert_eq!(safe_next("/reset/policy"), "/reset");
    assert_eq!(safe_next("/unlock"), "/unlock");
    assert_eq!(safe_next("/resetx"), "/");
    assert_eq!(safe_next("https://evil.example/"), "/");
    assert_eq!(safe_next("//evil.example/reset"), "/");
    assert_eq!(safe_next(""), "/");
}

#[test]
fn strength_needs_every_amr_and_one_acr() {
    assert!(check_strength(&config(&[], &[]), &[], None).is_ok());
    let mfa = config(&["mfa"], &[]);
    assert!(check_strength(&mfa, &["pwd", "mfa"], None).is_ok());
    let err = check_strength(&mfa, &["pwd"], None).unwrap_err();
    assert!(err.contains("mfa"), "{err}");
    assert!(check_strength(&mfa, &[], None).is_err());
    let acr = config(&[], &["urn:mace:incommon:iap:silver", "phr"]);
    assert!(check_strength(&acr, &[], Some("phr")).is_ok());
    assert!(check_strength(&acr, &[], Some("pwd")).is_err());
    assert!(check_strength(&acr, &[], None).is_err());
}

#[test]
fn the_account_claim_must_be_a_plain_string() {
    let jwt = |payload: &str| format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(payload));
    let token = jwt(r#"{"preferred_username":" ada@contoso.example ","upn":7,"email":"a\nb"}"#);
    assert_eq!(
        claim(&token, "preferred_username").as_deref(),
        Some("ada@contoso.example")
    );
    assert_eq!(claim(&token, "upn"), None);
    assert_eq!(claim(&token, "email"), None);
    assert_eq!(claim(&token, "absent"), None);
    assert_eq!(claim(&jwt(r#"{"upn":""}"#), "upn"), None);
    assert_eq!(claim("not a jwt", "upn"), None);
}
