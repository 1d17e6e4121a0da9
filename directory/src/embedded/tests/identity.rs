//! Which account an operation acts on (its objectGUID, wherever it was
//! moved; a deleted one is not found) and whether it is locked out now.

use super::*;

#[tokio::test]
async fn a_lockout_ends_after_the_lockout_duration_as_ad_computes_it() {
    // The domain's default (30 minutes, as AD's).
    let fx = small_forest(json!([ace("allow", "generic-all", X_SVC, true)]), |_| {});
    let ada = acct(&fx.dir, X_ADA);
    fx.dir.lock(X_ADA).unwrap();
    let change = |current: &'static str, new: &'static str| {
        let (d, a) = (fx.dir.clone(), ada.clone());
        async move { d.change_password(&a, &pw(current), &pw(new)).await }
    };
    assert_eq!(
        change("Start-Passw0rd", "Next-Passw0rd-1").await,
        Err(Refusal::AccountLocked)
    );
    fx.advance(30 * 60 * 1000 - 1);
    assert!(fx.dir.account_state(X_ADA).unwrap().locked);
    assert_eq!(
        change("Start-Passw0rd", "Next-Passw0rd-1").await,
        Err(Refusal::AccountLocked)
    );
    // Expired: lockoutTime stays set (as in AD) but the account is not locked.
    fx.advance(1);
    let state = fx.dir.account_state(X_ADA).unwrap();
    assert!(!state.locked && state.lockout_time_ms == T0);
    change("Start-Passw0rd", "Next-Passw0rd-1").await.unwrap();

    // A PSO's duration wins over the domain's; 0 means until unlocked.
    let fx = small_forest(json!([ace("allow", "generic-all", X_SVC, true)]), |f| {
        f["domains"][0]["lockout_duration_secs"] = json!(0);
        f["domains"][0]["password_settings"] = json!([
            {"name": "Short lockout", "precedence": 1, "lockout_duration_secs": 60,
             "settings": {"min_length": 8, "complexity": true, "history_length": 2,
                          "min_age_secs": 0, "max_age_secs": 0},
             "applies_to": [X_ADA]}
        ]);
    });
    fx.dir.lock(X_ADA).unwrap();
    fx.dir.lock(X_SVC).unwrap();
    fx.advance(60 * 1000);
    assert!(!fx.dir.account_state(X_ADA).unwrap().locked);
    fx.advance(DAY_MS);
    assert!(fx.dir.account_state(X_SVC).unwrap().locked);
}

#[tokio::test]
async fn a_moved_account_is_acted_on_by_its_object_guid_and_a_deleted_one_is_not_found() {
    let fx = sample("contoso");
    let ada = acct(&fx.dir, ADA);
    let Imported { cursor, .. } = fx.dir.import(None).await.unwrap();
    let moved = "CN=Ada King,OU=IT,OU=Users,DC=contoso,DC=example";
    fx.dir.move_user(ADA, moved).unwrap();
    assert!(fx.dir.account_state(ADA).is_none());

    // The account the connector space holds (old DN) still names her.
    fx.dir
        .reset_password(&ada, &pw("Moved-Passw0rd-1"), false, false)
        .await
        .unwrap();
    assert!(fx.dir.check_password(moved, &pw("Moved-Passw0rd-1")));
    assert_eq!(
        fx.dir.refresh(&ada).await.unwrap().map(|a| a.dn),
        Some(moved.to_owned())
    );
    let changed = fx.dir.import(Some(cursor)).await.unwrap();
    let seen: Vec<_> = changed
        .accounts
        .iter()
        .map(|a| (a.object_guid, a.dn.as_str()))
        .collect();
    assert_eq!(seen, [(ada.object_guid, moved)]);
    assert!(fx.reopen().account_state(moved).is_some());

    // Deleted: every operation is UserNotFound, and the import reports the tombstone.
    fx.dir.delete_user(moved).unwrap();
    assert_eq!(
        fx.dir
            .reset_password(&ada, &pw("Moved-Passw0rd-2"), false, false)
            .await,
        Err(Refusal::UserNotFound)
    );
    assert_eq!(
        fx.dir
            .change_password(&ada, &pw("Moved-Passw0rd-1"), &pw("Moved-Passw0rd-2"))
            .await,
        Err(Refusal::UserNotFound)
    );
    assert_eq!(fx.dir.unlock(&ada).await, Err(Refusal::UserNotFound));
    assert_eq!(fx.dir.policy(&ada).await, Err(Refusal::UserNotFound));
    assert_eq!(fx.dir.refresh(&ada).await.unwrap(), None);
    let after = fx.dir.import(Some(changed.cursor)).await.unwrap();
    assert!(after.accounts.is_empty());
    assert_eq!(after.deleted, [ada.object_guid]);
    let reopened = fx.reopen().import(Some(changed.cursor)).await.unwrap();
    assert_eq!(reopened.deleted, [ada.object_guid]);
    assert!(fx.dir.import(None).await.unwrap().deleted.is_empty());

    // A move onto a missing OU or an existing DN is refused and changes nothing.
    let nowhere = "CN=Grace,OU=Nowhere,DC=contoso,DC=example";
    assert!(fx.dir.move_user(GRACE, nowhere).is_err());
    assert!(fx.dir.move_user(GRACE, LINUS).is_err());
    assert!(fx.dir.account_state(GRACE).is_some());
}
