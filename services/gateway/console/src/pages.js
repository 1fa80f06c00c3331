import MapPage from './pages/MapPage.vue'
import Warnings from './pages/Warnings.vue'
import Approvals from './pages/Approvals.vue'
import Board from './pages/Board.vue'
import Health from './pages/Health.vue'
import People from './pages/People.vue'
import Silences from './pages/Silences.vue'
import Audit from './pages/Audit.vue'

// each page with the scope it needs to be offered (the services check every call again)
export const PAGES = [
  { path: '/', name: 'map', component: MapPage, title: '一张图', scope: 'risk:read' },
  { path: '/warnings', name: 'warnings', component: Warnings, title: '预警', scope: 'warnings:read' },
  { path: '/approvals', name: 'approvals', component: Approvals, title: '审批', scope: 'warnings:read' },
  { path: '/board', name: 'board', component: Board, title: '叫应', scope: 'warnings:read' },
  { path: '/health', name: 'health', component: Health, title: '监测在线', scope: 'stations:read' },
  { path: '/people', name: 'people', component: People, title: '人员', scope: 'recipients:read' },
  { path: '/silences', name: 'silences', component: Silences, title: '静默与维护', scope: 'silences:read' },
  { path: '/audit', name: 'audit', component: Audit, title: '审计日志', scope: 'audit:read' },
]
