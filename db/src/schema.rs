//! Diesel table definitions, matching `migrations/` (written by hand: the same schema
//! serves SQLite and PostgreSQL, so it uses only types both share).

diesel::table! {
    tasks (id) {
        id -> Text,
        owner -> Text,
        title -> Text,
        complexity -> Integer,
        status -> Text,
        restarted_from -> Nullable<Text>,
        created_at -> BigInt,
        started_at -> Nullable<BigInt>,
        finished_at -> Nullable<BigInt>,
        updated_at -> BigInt,
        error -> Nullable<Text>,
        last_seq -> BigInt,
        last_log_seq -> BigInt,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<BigInt>,
        lease_token -> BigInt,
        last_progress_seq -> BigInt,
        queued_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    steps (task_id, step_order) {
        task_id -> Text,
        step_order -> Integer,
        name -> Text,
        kind -> Text,
        params -> Text,
        requires_approval -> Integer,
        skippable -> Integer,
        approved -> Integer,
        status -> Text,
        progress -> Integer,
        attempts -> Integer,
        started_at -> Nullable<BigInt>,
        finished_at -> Nullable<BigInt>,
        work_ms -> BigInt,
        error -> Nullable<Text>,
        output -> Nullable<Text>,
        estimate_ms -> Nullable<BigInt>,
        policy -> Nullable<Text>,
        due_at -> Nullable<BigInt>,
        remind_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    substeps (task_id, step_order, position) {
        task_id -> Text,
        step_order -> Integer,
        position -> Integer,
        name -> Text,
        done -> Integer,
    }
}

diesel::table! {
    step_logs (task_id, seq) {
        task_id -> Text,
        seq -> BigInt,
        step_order -> Integer,
        stream -> Text,
        line -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    task_events (task_id, seq) {
        task_id -> Text,
        seq -> BigInt,
        kind -> Text,
        step_order -> Nullable<Integer>,
        detail -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    task_progress (task_id, id) {
        task_id -> Text,
        id -> BigInt,
        seq -> BigInt,
        step -> Integer,
        percent -> Integer,
        status -> Text,
        updated_at -> BigInt,
    }
}

diesel::table! {
    step_runs (task_id, step_order, attempt) {
        task_id -> Text,
        step_order -> Integer,
        attempt -> Integer,
        step_key -> Text,
        complexity -> Integer,
        duration_ms -> BigInt,
        finished_at -> BigInt,
        progress -> Text,
    }
}

diesel::table! {
    users (name) {
        name -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    api_tokens (id) {
        id -> Text,
        user_name -> Text,
        secret_hash -> Text,
        created_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
        requests_per_second -> Nullable<Integer>,
    }
}

diesel::table! {
    notification_preferences (user_name) {
        user_name -> Text,
        document -> Text,
        updated_at -> BigInt,
    }
}

diesel::table! {
    notifications (id) {
        id -> Text,
        user_name -> Text,
        task_id -> Text,
        event -> Text,
        channel -> Text,
        target -> Text,
        message -> Text,
        attempt -> Integer,
        outcome -> Text,
        detail -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    push_subscriptions (id) {
        id -> Text,
        user_name -> Text,
        endpoint -> Text,
        p256dh -> Text,
        auth -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    vapid_keys (id) {
        id -> Integer,
        private_key -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    chat_conversations (user_name) {
        user_name -> Text,
        state -> Text,
        heard_at -> BigInt,
    }
}

diesel::table! {
    chat_messages (id) {
        id -> Text,
        user_name -> Text,
        sender -> Text,
        text -> Text,
        task_id -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    task_start_estimates (task_id) {
        task_id -> Text,
        seconds -> BigInt,
        created_at -> BigInt,
    }
}

diesel::table! {
    server_secrets (name) {
        name -> Text,
        secret -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    approval_link_uses (link_id) {
        link_id -> Text,
        task_id -> Text,
        step -> Integer,
        decision -> Text,
        user_name -> Text,
        expires_at -> BigInt,
        used_at -> BigInt,
    }
}

diesel::table! {
    servers (id) {
        id -> Text,
        address -> Nullable<Text>,
        started_at -> BigInt,
        heartbeat_at -> BigInt,
        running_tasks -> Integer,
        stopped_at -> Nullable<BigInt>,
        max_tasks -> Integer,
    }
}

diesel::table! {
    task_estimates (task_id) {
        task_id -> Text,
        remaining_ms -> BigInt,
        low_ms -> BigInt,
        high_ms -> BigInt,
        confidence -> Text,
        steps -> Text,
        made_at -> BigInt,
    }
}

diesel::table! {
    idempotency_keys (owner, idempotency_key) {
        owner -> Text,
        idempotency_key -> Text,
        request_hash -> Text,
        task_id -> Text,
        created_at -> BigInt,
    }
}

diesel::joinable!(steps -> tasks (task_id));

diesel::allow_tables_to_appear_in_same_query!(
    tasks,
    steps,
    substeps,
    step_logs,
    task_events,
    task_progress,
    step_runs,
    users,
    api_tokens,
    notification_preferences,
    notifications,
    push_subscriptions,
    vapid_keys,
    chat_messages,
    chat_conversations,
    task_start_estimates,
    server_secrets,
    approval_link_uses,
    servers,
    task_estimates,
    idempotency_keys
);
