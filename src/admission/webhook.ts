import express from 'express';
import { parseReplayRequest, replayAnnotation } from '../api/replay.ts';
import { InvalidResource, isHookyardKind, parseResource } from '../api/validate.ts';

/** The `request` of an admission.k8s.io/v1 AdmissionReview, the parts read here. */
interface AdmissionRequest {
  uid: string;
  kind: { group: string; kind: string };
  operation: string;
  object?: unknown;
}

/**
 * Decides one admission request. The API server has already checked the CRD's schema and CEL rules; this adds
 * what CEL in the API server cannot check, chiefly that a subscription's filter compiles, by running the same
 * schemas dev mode uses.
 */
export function review(request: AdmissionRequest): { uid: string; allowed: boolean; status?: object } {
  const { uid, kind, operation, object } = request;
  if (operation === 'DELETE' || kind.group !== 'hookyard.io' || !isHookyardKind(kind.kind)) {
    return { uid, allowed: true };
  }
  try {
    parseResource(object);
    // A replay request is an annotation, which no schema covers: a bad one is refused here with what to type.
    const replay = (object as { metadata?: { annotations?: Record<string, string> } }).metadata?.annotations?.[
      replayAnnotation
    ];
    const parsed = kind.kind === 'WebhookSubscription' && replay !== undefined ? parseReplayRequest(replay) : undefined;
    if (parsed && 'problem' in parsed) {
      return { uid, allowed: false, status: { code: 422, reason: 'Invalid', message: parsed.problem } };
    }
    return { uid, allowed: true };
  } catch (err) {
    if (!(err instanceof InvalidResource)) throw err;
    return { uid, allowed: false, status: { code: 422, reason: 'Invalid', message: err.problems.join('; ') } };
  }
}

/** Express routes for the ValidatingWebhookConfiguration: POST /validate with an AdmissionReview. */
export function admissionRouter(): express.Router {
  const router = express.Router();
  router.post('/validate', express.json({ limit: '3mb' }), (req, res) => {
    const body = req.body as { apiVersion?: string; request?: AdmissionRequest };
    if (!body?.request?.uid) {
      res.status(400).json({ error: 'expected an admission.k8s.io/v1 AdmissionReview with a request' });
      return;
    }
    res.json({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response: review(body.request) });
  });
  return router;
}
