//! `breakerd.v1.Admin`: inspect and steer circuits. The core checks the
//! actor and reason of every change, writes the audit event, and answers
//! every change only once it is durable in the store.

use std::{sync::Arc, time::Duration};

use breakerd_proto::v1::{self as pb, admin_server::Admin};
use tonic::{Request, Response, Status};

use super::{
    convert::{
        audit_event_to_proto, audit_limit_from_proto, detail_to_proto, invalid,
        list_query_from_proto, override_kind_from_proto, page_to_proto, policy_spec_from_proto,
        status_from_core, status_from_refused,
    },
    limits::{ClientId, ClientLimits},
};
use breakerd_core::Registry;

/// The admin service.
#[derive(Debug, Clone)]
pub struct AdminService {
    registry: Arc<Registry>,
    limits: Arc<ClientLimits>,
}

impl AdminService {
    /// A service steering `registry`, with no per-client limits.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self {
            registry,
            limits: ClientLimits::disabled(),
        }
    }

    /// The same service under per-client `limits` (admin calls carry no
    /// node id: they count against the caller's IP).
    #[must_use]
    pub fn with_limits(mut self, limits: Arc<ClientLimits>) -> Self {
        self.limits = limits;
        self
    }

    /// Counts one request of the caller, and returns who it is: calls that
    /// may create a circuit hand its new-circuit budget to the registry.
    fn admit<T>(&self, request: &Request<T>) -> Result<ClientId, Status> {
        let client = ClientId::of(request, "");
        self.limits.check_request(&client)?;
        Ok(client)
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn get_circuit(
        &self,
        request: Request<pb::GetCircuitRequest>,
    ) -> Result<Response<pb::CircuitDetail>, Status> {
        self.admit(&request)?;
        let detail = self
            .registry
            .get(&request.get_ref().name)
            .map_err(status_from_core)?;
        Ok(Response::new(detail_to_proto(&detail)))
    }

    async fn list_circuits(
        &self,
        request: Request<pb::ListCircuitsRequest>,
    ) -> Result<Response<pb::ListCircuitsResponse>, Status> {
        self.admit(&request)?;
        let query = list_query_from_proto(request.into_inner())?;
        let page = self.registry.list(&query).map_err(status_from_core)?;
        Ok(Response::new(page_to_proto(page)))
    }

    async fn set_policy(
        &self,
        request: Request<pb::SetPolicyRequest>,
    ) -> Result<Response<pb::CircuitDetail>, Status> {
        let client = self.admit(&request)?;
        let req = request.into_inner();
        let Some(policy) = &req.policy else {
            return Err(invalid("policy", "is required: set the fields to change"));
        };
        let spec = policy_spec_from_proto(policy)?;
        let budget = self.limits.new_circuit_budget(&client);
        let detail = self
            .registry
            .set_policy_admitted(&req.name, &spec, &req.actor, &req.reason, &budget)
            .await
            .map_err(status_from_refused)?;
        Ok(Response::new(detail_to_proto(&detail)))
    }

    async fn set_override(
        &self,
        request: Request<pb::SetOverrideRequest>,
    ) -> Result<Response<pb::CircuitDetail>, Status> {
        let client = self.admit(&request)?;
        let req = request.into_inner();
        let kind = override_kind_from_proto(req.kind)?;
        let expires_in = (req.expires_in_ms != 0).then(|| Duration::from_millis(req.expires_in_ms));
        let budget = self.limits.new_circuit_budget(&client);
        let detail = self
            .registry
            .set_override_admitted(
                &req.name,
                kind,
                &req.actor,
                &req.reason,
                expires_in,
                &budget,
            )
            .await
            .map_err(status_from_refused)?;
        Ok(Response::new(detail_to_proto(&detail)))
    }

    async fn clear_override(
        &self,
        request: Request<pb::ClearOverrideRequest>,
    ) -> Result<Response<pb::CircuitDetail>, Status> {
        self.admit(&request)?;
        let req = request.into_inner();
        let detail = self
            .registry
            .clear_override(&req.name, &req.actor, &req.reason)
            .await
            .map_err(status_from_core)?;
        Ok(Response::new(detail_to_proto(&detail)))
    }

    async fn reset_circuit(
        &self,
        request: Request<pb::ResetCircuitRequest>,
    ) -> Result<Response<pb::CircuitDetail>, Status> {
        self.admit(&request)?;
        let req = request.into_inner();
        let detail = self
            .registry
            .reset(&req.name, &req.actor, &req.reason)
            .await
            .map_err(status_from_core)?;
        Ok(Response::new(detail_to_proto(&detail)))
    }

    async fn delete_circuit(
        &self,
        request: Request<pb::DeleteCircuitRequest>,
    ) -> Result<Response<pb::DeleteCircuitResponse>, Status> {
        self.admit(&request)?;
        let req = request.into_inner();
        self.registry
            .delete(&req.name, &req.actor, &req.reason)
            .await
            .map_err(status_from_core)?;
        Ok(Response::new(pb::DeleteCircuitResponse { name: req.name }))
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        self.admit(&request)?;
        let req = request.into_inner();
        let limit = audit_limit_from_proto(req.limit)?;
        let circuit = (!req.circuit.is_empty()).then_some(req.circuit.as_str());
        let records = self
            .registry
            .audit_log(circuit, limit)
            .map_err(status_from_core)?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: records.into_iter().map(audit_event_to_proto).collect(),
        }))
    }
}
